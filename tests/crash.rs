//! The parent both crash tests run (in one process, and in a helper process
//! killed with SIGKILL): `prepare` sets how many children to map, `map`
//! runs one `child` subgraph per child and reduces, in task order, each
//! child's `v` and `trail` into `results`.

use serde_json::{Value, json};
use tributary::{FnAction, ParallelAction, State, Subgraph, action};

/// `prepare`: sets `children` to `n`.
pub fn prepare(n: u64) -> FnAction {
    action("prepare")
        .writes(["children"])
        .run(move |s: State, _, _| async move { Ok((json!({}), s.set("children", n))) })
}

/// `map`: one `child` per `0..children`, each starting from
/// `{ item, v: 1, trail: [] }`, reduced into `results`.
pub fn map_children(child: Subgraph) -> ParallelAction {
    ParallelAction::map_states("map", child, |s: &State, _| {
        let n: u64 = s.get_as("children")?;
        Ok((0..n).map(|i| {
            State::new()
                .set("item", i)
                .set("v", 1)
                .set("trail", json!([]))
        }))
    })
    .reads(["children"])
    .writes(["results"])
    .reduce(|s, outcomes| {
        let results: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                let state = o.state().ok_or("a child did not complete")?;
                Ok(json!({ "v": state.get("v"), "trail": state.get("trail") }))
            })
            .collect::<Result<_, &str>>()?;
        Ok(s.set("results", results))
    })
    .build()
}
