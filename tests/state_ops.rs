//! Every `State` operation and its error cases.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tributary::{State, StateError, Wipe};

fn base() -> State {
    State::new().update([
        ("n", json!(1)),
        ("items", json!(["a"])),
        ("name", json!("x")),
        ("f", json!(1.5)),
    ])
}

#[test]
fn update_and_set_return_new_states_and_leave_the_original() {
    let s = base();
    let t = s.update([("n", json!(2)), ("new", json!(true))]);
    assert_eq!(s.get("n"), Some(&json!(1)));
    assert!(!s.contains_key("new"));
    assert_eq!(t.get("n"), Some(&json!(2)));
    assert_eq!(t.get("new"), Some(&json!(true)));
    assert_eq!(t.set("n", 7).get("n"), Some(&json!(7)));
}

#[test]
fn clone_is_shared_and_update_shares_untouched_values() {
    let big = State::new().set("blob", json!(vec![0u8; 10_000]));
    let copy = big.clone();
    assert!(copy.ptr_eq(&big));
    let changed = big.set("other", 1);
    assert!(!changed.ptr_eq(&big));
    // The untouched value is shared, not copied.
    assert_eq!(changed.value_ptr("blob"), big.value_ptr("blob"));
}

#[test]
fn append_creates_extends_and_refuses_non_lists() {
    let s = base();
    assert_eq!(
        s.append("items", "b").unwrap().get("items"),
        Some(&json!(["a", "b"]))
    );
    assert_eq!(
        s.append("fresh", 1).unwrap().get("fresh"),
        Some(&json!([1]))
    );
    let err = s.append("name", 1).unwrap_err();
    assert!(
        matches!(&err, StateError::NotAList { key, found } if key == "name" && *found == "a string")
    );
    assert_eq!(
        err.to_string(),
        "cannot append to key `name`: it holds a string, not a list"
    );
}

#[test]
fn extend_creates_extends_and_refuses_non_lists() {
    let s = base();
    assert_eq!(
        s.extend("items", [json!("b"), json!("c")])
            .unwrap()
            .get("items"),
        Some(&json!(["a", "b", "c"]))
    );
    assert_eq!(
        s.extend("fresh", [1, 2]).unwrap().get("fresh"),
        Some(&json!([1, 2]))
    );
    assert!(matches!(
        s.extend("n", [1]),
        Err(StateError::NotAList {
            found: "an integer",
            ..
        })
    ));
    // The original is untouched.
    assert_eq!(s.get("items"), Some(&json!(["a"])));
}

#[test]
fn increment_creates_adds_and_refuses_non_integers() {
    let s = base();
    assert_eq!(s.increment("n", 4).unwrap().get("n"), Some(&json!(5)));
    assert_eq!(s.increment("n", -3).unwrap().get("n"), Some(&json!(-2)));
    assert_eq!(
        s.increment("fresh", 3).unwrap().get("fresh"),
        Some(&json!(3))
    );
    assert!(matches!(
        s.increment("f", 1),
        Err(StateError::NotAnInteger {
            found: "a float",
            ..
        })
    ));
    assert!(matches!(
        s.increment("name", 1),
        Err(StateError::NotAnInteger {
            found: "a string",
            ..
        })
    ));
    assert!(matches!(
        s.increment("items", 1),
        Err(StateError::NotAnInteger {
            found: "a list",
            ..
        })
    ));
    let max = State::new().set("m", i64::MAX);
    assert!(matches!(
        max.increment("m", 1),
        Err(StateError::Overflow { .. })
    ));
}

#[test]
fn merge_other_wins() {
    let a = State::new().update([("x", json!(1)), ("y", json!(1))]);
    let b = State::new().update([("y", json!(2)), ("z", json!(2))]);
    let m = a.merge(&b);
    assert_eq!(m.to_json(), json!({ "x": 1, "y": 2, "z": 2 }));
    assert_eq!(State::new().merge(&b), b);
}

#[test]
fn subset_skips_missing_keys() {
    let s = base().subset(["n", "missing", "name"]);
    assert_eq!(s.keys().collect::<Vec<_>>(), ["n", "name"]);
}

#[test]
fn wipe_keep_and_delete() {
    let s = base();
    assert_eq!(
        s.wipe(Wipe::keep(["n", "nope"])).keys().collect::<Vec<_>>(),
        ["n"]
    );
    assert_eq!(
        s.wipe(Wipe::delete(["n", "f", "nope"]))
            .keys()
            .collect::<Vec<_>>(),
        ["items", "name"]
    );
    assert!(s.wipe(Wipe::keep(Vec::<String>::new())).is_empty());
    assert_eq!(s.wipe(Wipe::delete(Vec::<String>::new())), s);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Doc {
    title: String,
    pages: u32,
}

#[test]
fn typed_reads_through_serde() {
    let s = State::new().set("doc", json!({ "title": "t", "pages": 3 }));
    assert_eq!(
        s.get_as::<Doc>("doc").unwrap(),
        Doc {
            title: "t".into(),
            pages: 3
        }
    );
    assert_eq!(s.get_opt::<Doc>("none").unwrap(), None);
    let missing = s.get_as::<Doc>("nope").unwrap_err();
    assert!(
        matches!(&missing, StateError::Missing { key, available } if key == "nope" && available == "doc")
    );
    let wrong = s.get_as::<u32>("doc").unwrap_err();
    assert!(matches!(wrong, StateError::Type { ref key, .. } if key == "doc"));
}

#[test]
fn json_round_trip() {
    let s = base();
    let text = serde_json::to_string(&s).unwrap();
    let back: State = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
    assert_eq!(State::from_json(s.to_json()).unwrap(), s);
    assert!(matches!(
        State::from_json(json!([1])),
        Err(StateError::NotAnObject { found: "a list" })
    ));
}

#[test]
fn public_hides_reserved_keys() {
    let s = base().set("__internal", 1);
    assert!(s.public_keys().all(|k| !k.starts_with("__")));
    assert!(!s.public().contains_key("__internal"));
    assert_eq!(s.public().len(), 4);
}

#[test]
fn changed_keys_reports_added_removed_and_changed() {
    let a = State::new().update([
        ("same", json!(1)),
        ("changed", json!(1)),
        ("removed", json!(1)),
    ]);
    let b = a.set("changed", 2).set("added", 0).remove("removed");
    assert_eq!(a.changed_keys(&b), ["added", "changed", "removed"]);
    // Setting an equal value is not a change.
    assert!(a.changed_keys(&a.set("same", 1)).is_empty());
}

#[test]
fn set_as_writes_any_serialize_and_reads_back_with_get_as() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Forecast {
        city: String,
        days: Vec<u8>,
    }
    let forecast = Forecast {
        city: "Ghent".into(),
        days: vec![1, 2],
    };
    let s = base();
    let t = s.set_as("forecast", &forecast).unwrap();
    assert_eq!(
        t.get("forecast"),
        Some(&json!({ "city": "Ghent", "days": [1, 2] }))
    );
    assert_eq!(t.get_as::<Forecast>("forecast").unwrap(), forecast);
    assert_eq!(s.get("forecast"), None, "the original is unchanged");
    // Unsized values serialize too.
    let u = s.set_as("name", "y").unwrap();
    assert_eq!(u.get("name"), Some(&json!("y")));
}

#[test]
fn set_as_refuses_a_value_that_does_not_serialize_and_names_the_key() {
    // JSON objects have string keys: a map keyed by a tuple cannot be one.
    let mut bad = std::collections::BTreeMap::new();
    bad.insert((1, 2), "x");
    let err = base().set_as("pairs", &bad).unwrap_err();
    assert!(
        matches!(&err, StateError::Serialize { key, .. } if key == "pairs"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`pairs`"), "{err}");
}
