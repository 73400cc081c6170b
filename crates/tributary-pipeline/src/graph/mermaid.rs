//! Drawing a pipeline as a Mermaid flowchart.

use std::fmt::Write;

use crate::graph::{Join, Pipeline};
use crate::item::Item;

impl<T: Item> Pipeline<T> {
    /// The pipeline as a Mermaid flowchart, left to right: sources are
    /// stadiums, sinks subroutines, processors rectangles; a multi-input
    /// node's label names its join, a concurrent node's label its
    /// concurrency, and each edge is labelled with its capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// use tributary_pipeline::{iter_source, map, Pipeline};
    ///
    /// let p = Pipeline::builder()
    ///     .source("inp", iter_source(vec![1u8]))
    ///     .processor("out", map(|x: u8| async move { Ok::<_, std::io::Error>(x) }))
    ///     .edge_with_capacity("inp", "out", 4)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(
    ///     p.to_mermaid(),
    ///     "flowchart LR\n    n0([\"inp\"])\n    n1[[\"out\"]]\n    n0 -->|4| n1\n"
    /// );
    /// ```
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for (i, (name, node)) in self.nodes.iter().enumerate() {
            let inputs = self.edges.iter().filter(|e| e.to == i).count();
            let outputs = self.edges.iter().filter(|e| e.from == i).count();
            let mut label = escape(name);
            if inputs > 1 {
                let join = match node.join {
                    Join::Zip => "zip",
                    Join::Merge => "merge",
                    Join::Latest => "latest",
                };
                let _ = write!(label, " · {join}");
            }
            if node.concurrency > 1 {
                let _ = write!(label, " ×{}", node.concurrency);
            }
            let (open, close) = if node.is_source() {
                ("([", "])")
            } else if outputs == 0 {
                ("[[", "]]")
            } else {
                ("[", "]")
            };
            let _ = writeln!(out, "    n{i}{open}\"{label}\"{close}");
        }
        for e in &self.edges {
            let _ = writeln!(out, "    n{} -->|{}| n{}", e.from, e.capacity, e.to);
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('"', "#quot;")
}
