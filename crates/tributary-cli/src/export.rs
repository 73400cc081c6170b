//! `tributary export`: a run's actions and the transitions it took, as a
//! Mermaid flowchart or a Graphviz DOT digraph.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use tributary_sqlite::{RunReader, RunSummary, TrackedStepStatus};

use crate::{CliError, Format, write_json};

/// An action of the run, in order of its first step.
#[derive(Debug, Serialize)]
struct ActionNode {
    action: String,
    /// How many step attempts ran it (retries included).
    runs: u64,
    /// How many of those attempts failed.
    failed: u64,
}

/// A transition the run took, from one step's action to the next's.
#[derive(Debug, Serialize)]
struct Edge {
    from: String,
    to: String,
    /// How often it was taken.
    count: u64,
}

#[derive(Debug, Serialize)]
struct RunGraph {
    app_id: String,
    entry: Option<String>,
    nodes: Vec<ActionNode>,
    edges: Vec<Edge>,
}

pub(crate) fn export(
    reader: &RunReader,
    run: &RunSummary,
    format: Format,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let graph = observed(run, &reader.steps(&run.app_id)?);
    if json {
        return write_json(out, &graph);
    }
    match format {
        Format::Mermaid => mermaid(&graph, out),
        Format::Dot => dot(&graph, out),
    }
}

fn observed(run: &RunSummary, steps: &[tributary_sqlite::TrackedStep]) -> RunGraph {
    let mut nodes: Vec<ActionNode> = Vec::new();
    let mut edges: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    let mut previous: Option<(u64, usize)> = None;
    for step in steps {
        let index = match nodes.iter().position(|n| n.action == step.action) {
            Some(i) => i,
            None => {
                nodes.push(ActionNode {
                    action: step.action.clone(),
                    runs: 0,
                    failed: 0,
                });
                nodes.len() - 1
            }
        };
        nodes[index].runs += 1;
        if step.status == TrackedStepStatus::Failed {
            nodes[index].failed += 1;
        }
        match previous {
            // A retry at the same sequence id is no transition.
            Some((seq, _)) if seq == step.sequence_id => {}
            Some((_, from)) => *edges.entry((from, index)).or_default() += 1,
            None => {}
        }
        previous = Some((step.sequence_id, index));
    }
    RunGraph {
        app_id: run.app_id.clone(),
        entry: nodes.first().map(|n| n.action.clone()),
        edges: edges
            .into_iter()
            .map(|((from, to), count)| Edge {
                from: nodes[from].action.clone(),
                to: nodes[to].action.clone(),
                count,
            })
            .collect(),
        nodes,
    }
}

fn node_label(node: &ActionNode) -> String {
    match node.failed {
        0 => format!("{} ×{}", node.action, node.runs),
        f => format!("{} ×{} ({f} failed)", node.action, node.runs),
    }
}

fn mermaid(graph: &RunGraph, out: &mut dyn Write) -> Result<(), CliError> {
    // Node ids are positional: action names may hold any character.
    let id = |action: &str| {
        let i = graph.nodes.iter().position(|n| n.action == action);
        format!("n{}", i.unwrap_or_default())
    };
    let escape = |s: &str| s.replace('"', "#quot;");
    writeln!(out, "flowchart LR")?;
    writeln!(out, "    start((\"{}\"))", escape(&graph.app_id))?;
    for node in &graph.nodes {
        writeln!(
            out,
            "    {}[\"{}\"]",
            id(&node.action),
            escape(&node_label(node))
        )?;
    }
    if let Some(entry) = &graph.entry {
        writeln!(out, "    start --> {}", id(entry))?;
    }
    for edge in &graph.edges {
        let label = match edge.count {
            1 => String::new(),
            n => format!("|×{n}|"),
        };
        writeln!(out, "    {} -->{label} {}", id(&edge.from), id(&edge.to))?;
    }
    let failed: Vec<String> = graph
        .nodes
        .iter()
        .filter(|n| n.failed > 0)
        .map(|n| id(&n.action))
        .collect();
    if !failed.is_empty() {
        writeln!(out, "    classDef failed stroke:#c00,stroke-width:2px")?;
        writeln!(out, "    class {} failed", failed.join(","))?;
    }
    Ok(())
}

fn dot(graph: &RunGraph, out: &mut dyn Write) -> Result<(), CliError> {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    writeln!(out, "digraph {} {{", q(&graph.app_id))?;
    writeln!(out, "    rankdir=LR;")?;
    writeln!(out, "    \"__start\" [shape=point];")?;
    for node in &graph.nodes {
        let color = if node.failed > 0 { ", color=red" } else { "" };
        writeln!(
            out,
            "    {} [label={}{color}];",
            q(&node.action),
            q(&node_label(node))
        )?;
    }
    if let Some(entry) = &graph.entry {
        writeln!(out, "    \"__start\" -> {};", q(entry))?;
    }
    for edge in &graph.edges {
        let label = match edge.count {
            1 => String::new(),
            n => format!(" [label=\"×{n}\"]"),
        };
        writeln!(out, "    {} -> {}{label};", q(&edge.from), q(&edge.to))?;
    }
    writeln!(out, "}}")?;
    Ok(())
}
