//! Pipelines described in JSON: the seed's graph built through a registry
//! runs with exact outputs, and each kind of mistake gives its typed error.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tributary::pipeline::{
    BuildError, Input, NodeContext, Pipeline, PipelineSpec, Registry, iter_source, map, processor,
    sink,
};

fn registry(seen: Arc<Mutex<Vec<Input<Value>>>>) -> Registry<Value> {
    let mut r = Registry::new();
    r.source("words", |args| {
        let count = args["count"].as_u64().ok_or("count must be a number")?;
        Ok(iter_source((0..count).map(|i| json!(format!("Word{i}")))))
    })
    .processor("reverse", |_| {
        Ok(map(|v: Value| async move {
            let s = v.as_str().ok_or("not a string")?;
            Ok::<_, &'static str>(json!(s.chars().rev().collect::<String>()))
        }))
    })
    .processor("upper", |_| {
        Ok(map(|v: Value| async move {
            Ok::<_, &'static str>(json!(v.as_str().unwrap_or_default().to_uppercase()))
        }))
    })
    .processor("lower_all", |_| {
        Ok(processor(
            |input: Input<Value>, _ctx: NodeContext| async move {
                let parts: Vec<String> = input
                    .into_items()
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_lowercase())
                    .collect();
                Ok::<_, &'static str>(vec![json!(parts.join("+"))])
            },
        ))
    })
    .processor("collect", move |_| {
        let seen = Arc::clone(&seen);
        Ok(sink(move |input: Input<Value>, _ctx: NodeContext| {
            seen.lock().unwrap().push(input);
            async { Ok::<_, &'static str>(()) }
        }))
    });
    r
}

fn seed_json() -> Value {
    json!({
        "nodes": [
            { "name": "inp", "processor": "words", "args": { "count": 10 } },
            { "name": "n1", "processor": "reverse" },
            { "name": "n2", "processor": "upper", "concurrency": 2, "keep_order": true },
            { "name": "n3", "processor": "lower_all", "join": "zip" },
            { "name": "n4", "processor": "collect", "join": "merge", "on_error": "skip" }
        ],
        "edges": [
            { "from": "inp", "to": "n1" },
            { "from": "n1", "to": "n2", "capacity": 1 },
            { "from": "n1", "to": "n3" },
            { "from": "n2", "to": "n3" },
            { "from": "n2", "to": "n4" },
            { "from": "n3", "to": "n4" }
        ]
    })
}

#[tokio::test]
async fn the_seed_graph_from_json_runs_with_exact_outputs() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::from_json(&seed_json().to_string(), &registry(Arc::clone(&seen))).unwrap();
    assert!(p.to_mermaid().contains("n1 -->|1| n2"));
    p.run().await.unwrap();
    let got = std::mem::take(&mut *seen.lock().unwrap());
    let rev = |i: usize| format!("Word{i}").chars().rev().collect::<String>();
    let (mut from_n2, mut from_n3) = (Vec::new(), Vec::new());
    for input in got {
        match input {
            Input::Merge { from, item } if &*from == "n2" => from_n2.push(item),
            Input::Merge { from, item } if &*from == "n3" => from_n3.push(item),
            other => panic!("{other:?}"),
        }
    }
    let want_n2: Vec<Value> = (0..10).map(|i| json!(rev(i).to_uppercase())).collect();
    let want_n3: Vec<Value> = (0..10)
        .map(|i| {
            let r = rev(i).to_lowercase();
            json!(format!("{r}+{r}"))
        })
        .collect();
    assert_eq!(from_n2, want_n2);
    assert_eq!(from_n3, want_n3);
}

#[test]
fn a_spec_round_trips_through_serde() {
    let spec = PipelineSpec::from_json(&seed_json().to_string()).unwrap();
    let again: PipelineSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
    assert_eq!(spec, again);
}

/// Build the seed's description after `edit`.
fn build(edit: impl FnOnce(&mut Value)) -> BuildError {
    let mut desc = seed_json();
    edit(&mut desc);
    Pipeline::from_json(&desc.to_string(), &registry(Arc::default())).unwrap_err()
}

#[test]
fn malformed_json_is_a_json_error() {
    let err = Pipeline::from_json("{ \"nodes\": [", &registry(Arc::default())).unwrap_err();
    assert!(matches!(err, BuildError::Json(_)), "{err:?}");
    let err = build(|d| d["nodes"][1]["concurency"] = json!(2));
    assert!(
        matches!(err, BuildError::Json(_)),
        "a misspelt option is refused: {err:?}"
    );
    let err = build(|d| d["nodes"][3]["join"] = json!("sideways"));
    assert!(matches!(err, BuildError::Json(_)), "{err:?}");
}

#[test]
fn an_unknown_processor_names_the_node_and_the_processor() {
    let err = build(|d| d["nodes"][2]["processor"] = json!("shout"));
    assert!(
        matches!(&err, BuildError::UnknownProcessor { node, processor } if node == "n2" && processor == "shout"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "node n2 names processor shout, which is not registered"
    );
}

#[test]
fn refused_arguments_name_the_node() {
    let err = build(|d| d["nodes"][0]["args"] = json!({ "count": "many" }));
    assert!(
        matches!(&err, BuildError::InvalidArgs { node, processor, source }
            if node == "inp" && processor == "words" && source.to_string() == "count must be a number"),
        "{err:?}"
    );
}

#[test]
fn a_duplicate_node_is_refused() {
    let err = build(|d| d["nodes"][2]["name"] = json!("n1"));
    assert!(
        matches!(&err, BuildError::DuplicateNode { node } if node == "n1"),
        "{err:?}"
    );
}

#[test]
fn a_dangling_edge_names_the_missing_end() {
    let err = build(|d| d["edges"][2]["to"] = json!("n9"));
    assert!(
        matches!(&err, BuildError::DanglingEdge { from, to, missing } if from == "n1" && to == "n9" && missing == "n9"),
        "{err:?}"
    );
    let err = build(|d| d["edges"][0]["from"] = json!("input"));
    assert!(
        matches!(&err, BuildError::DanglingEdge { missing, .. } if missing == "input"),
        "{err:?}"
    );
}

#[test]
fn a_duplicate_edge_is_refused() {
    let err = build(|d| {
        d["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "from": "n2", "to": "n4" }))
    });
    assert!(
        matches!(&err, BuildError::DuplicateEdge { from, to } if from == "n2" && to == "n4"),
        "{err:?}"
    );
}

#[test]
fn a_processor_without_inputs_is_missing_inputs() {
    let err = build(|d| {
        d["edges"].as_array_mut().unwrap().remove(0);
    });
    assert!(
        matches!(&err, BuildError::MissingInputs { node } if node == "n1"),
        "{err:?}"
    );
}

#[test]
fn an_edge_into_a_source_is_refused() {
    let err = build(|d| {
        d["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "from": "n4", "to": "inp" }))
    });
    assert!(
        matches!(&err, BuildError::SourceWithInputs { node, from } if node == "inp" && from == "n4"),
        "{err:?}"
    );
}

#[test]
fn a_cycle_names_its_nodes() {
    let err = build(|d| {
        d["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "from": "n3", "to": "n1" }))
    });
    let BuildError::Cycle { nodes } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(nodes, &["n1", "n2", "n3", "n4"]);
    assert_eq!(
        err.to_string(),
        "the pipeline has a cycle through n1 -> n2 -> n3 -> n4"
    );
    let err = build(|d| {
        d["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "from": "n4", "to": "n4" }))
    });
    assert!(
        matches!(&err, BuildError::Cycle { nodes } if nodes == &["n4"]),
        "{err:?}"
    );
}

#[test]
fn zero_capacity_and_zero_concurrency_are_refused() {
    let err = build(|d| d["edges"][1]["capacity"] = json!(0));
    assert!(
        matches!(&err, BuildError::ZeroCapacity { from, to } if from == "n1" && to == "n2"),
        "{err:?}"
    );
    let err = build(|d| d["nodes"][3]["concurrency"] = json!(0));
    assert!(
        matches!(&err, BuildError::ZeroConcurrency { node } if node == "n3"),
        "{err:?}"
    );
}

#[test]
fn an_empty_description_is_refused() {
    let err = Pipeline::from_json("{ \"nodes\": [] }", &registry(Arc::default())).unwrap_err();
    assert!(matches!(err, BuildError::Empty), "{err:?}");
}
