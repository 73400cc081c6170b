//! `tributary tree`: the subgraphs a run spawned, drawn as a tree.

use std::collections::HashSet;
use std::io::Write;

use serde::Serialize;
use tributary_sqlite::{RunReader, RunSummary};

use crate::render::format_duration;
use crate::{CliError, write_json};

/// Deeper than this, the tree is cut (a guard against a corrupt database).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Serialize)]
struct Node {
    #[serde(flatten)]
    run: RunSummary,
    children: Vec<Node>,
}

pub(crate) fn tree(
    reader: &RunReader,
    root: &RunSummary,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut seen = HashSet::new();
    let node = build(reader, root.clone(), &mut seen, 0)?;
    if json {
        return write_json(out, &node);
    }
    writeln!(out, "{}", label(&node.run, false))?;
    draw(&node.children, "", out)?;
    Ok(())
}

fn build(
    reader: &RunReader,
    run: RunSummary,
    seen: &mut HashSet<String>,
    depth: usize,
) -> Result<Node, CliError> {
    seen.insert(run.app_id.clone());
    let mut children = Vec::new();
    if depth < MAX_DEPTH {
        for child in reader.children(&run.app_id)? {
            // A child that is also an ancestor would loop forever.
            if !seen.contains(&child.app_id) {
                children.push(build(reader, child, seen, depth + 1)?);
            }
        }
    }
    Ok(Node { run, children })
}

fn label(run: &RunSummary, with_step: bool) -> String {
    let steps = match run.steps {
        1 => "1 step".to_owned(),
        n => format!("{n} steps"),
    };
    let mut text = format!("{}  [{}]  {steps}", run.app_id, run.status);
    if let Some(d) = run.duration_micros() {
        text.push_str(&format!("  {}", format_duration(d)));
    }
    if with_step {
        if let Some(p) = &run.spawning_parent {
            match &p.action {
                Some(action) => text.push_str(&format!("  (from step {} {action})", p.sequence_id)),
                None => text.push_str(&format!("  (from step {})", p.sequence_id)),
            }
        }
    }
    text
}

fn draw(children: &[Node], prefix: &str, out: &mut dyn Write) -> Result<(), CliError> {
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let (branch, indent) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        writeln!(out, "{prefix}{branch}{}", label(&child.run, true))?;
        draw(&child.children, &format!("{prefix}{indent}"), out)?;
    }
    Ok(())
}
