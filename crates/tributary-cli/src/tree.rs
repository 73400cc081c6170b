//! `tributary tree`: the subgraphs a run spawned, drawn as a tree: each
//! child by its task key (its app id is a hash), in task order.

use std::collections::HashSet;
use std::io::Write;

use crate::Reader;
use serde::Serialize;
use tributary_sqlite::RunSummary;

use crate::render::{clean, format_duration};
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
    reader: &Reader,
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
    reader: &Reader,
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
    let name = run.display_name();
    let mut text = if name == run.app_id {
        clean(name)
    } else {
        format!("{}  ({})", clean(name), clean(&run.app_id))
    };
    text.push_str(&format!("  [{}]  {steps}", run.status));
    if let Some(d) = run.active_micros {
        text.push_str(&format!("  {}", format_duration(d)));
    }
    if run.resumes > 0 {
        text.push_str(&format!("  resumed {}×", run.resumes));
    }
    if with_step {
        if let Some(p) = &run.spawning_parent {
            match &p.action {
                Some(action) => text.push_str(&format!(
                    "  (from step {} {})",
                    p.sequence_id,
                    clean(action)
                )),
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
