//! `tributary export`: a run's actions and the transitions it took, as a
//! Mermaid flowchart or a Graphviz DOT digraph, with the subgraphs its
//! parallel actions spawned drawn inside it (Mermaid `subgraph` blocks, DOT
//! clusters), each joined to the action that spawned it.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use crate::Reader;
use serde::Serialize;
use tributary_sqlite::{RunSummary, TrackedStep, TrackedStepStatus};

use crate::render::clean;
use crate::{CliError, Format, write_json};

/// Children deeper than this are left out (a guard against a loop in a
/// damaged database, and against unreadable drawings).
const MAX_DEPTH: usize = 8;

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
    /// The task key or label, for a child.
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    /// The parent's action that spawned it, for a child.
    #[serde(skip_serializing_if = "Option::is_none")]
    spawned_by: Option<String>,
    entry: Option<String>,
    nodes: Vec<ActionNode>,
    edges: Vec<Edge>,
    /// The subgraphs it spawned, in task order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    children: Vec<RunGraph>,
}

pub(crate) fn export(
    reader: &Reader,
    run: &RunSummary,
    format: Format,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut seen = HashSet::new();
    let graph = build(reader, run, 0, &mut seen)?;
    if json {
        return write_json(out, &graph);
    }
    match format {
        Format::Mermaid => mermaid(&graph, out),
        Format::Dot => dot(&graph, out),
    }
}

fn build(
    reader: &Reader,
    run: &RunSummary,
    depth: usize,
    seen: &mut HashSet<String>,
) -> Result<RunGraph, CliError> {
    seen.insert(run.app_id.clone());
    let mut graph = observed(run, &reader.steps(&run.app_id)?);
    if depth > 0 {
        graph.label = Some(run.display_name().to_owned());
        graph.spawned_by = run.spawning_parent.as_ref().and_then(|p| p.action.clone());
    }
    if depth < MAX_DEPTH {
        for child in reader.children(&run.app_id)? {
            if !seen.contains(&child.app_id) {
                graph.children.push(build(reader, &child, depth + 1, seen)?);
            }
        }
    }
    Ok(graph)
}

fn observed(run: &RunSummary, steps: &[TrackedStep]) -> RunGraph {
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
        label: None,
        spawned_by: None,
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
        children: Vec::new(),
    }
}

fn node_label(node: &ActionNode) -> String {
    match node.failed {
        0 => format!("{} ×{}", node.action, node.runs),
        f => format!("{} ×{} ({f} failed)", node.action, node.runs),
    }
}

fn index_of(graph: &RunGraph, action: &str) -> usize {
    graph
        .nodes
        .iter()
        .position(|n| n.action == action)
        .unwrap_or_default()
}

// ===== Mermaid =====

/// Text inside a quoted Mermaid label.
fn mermaid_text(s: &str) -> String {
    clean(s).replace('"', "#quot;")
}

fn mermaid(graph: &RunGraph, out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(out, "flowchart LR")?;
    writeln!(out, "    start((\"{}\"))", mermaid_text(&graph.app_id))?;
    mermaid_body(graph, "", "    ", out)
}

/// The nodes and edges of `graph` (ids prefixed by `prefix`: action names
/// may hold any character, so ids are positional), then its children as
/// subgraph blocks, each joined to the node that spawned it.
fn mermaid_body(
    graph: &RunGraph,
    prefix: &str,
    indent: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id = |action: &str| format!("{prefix}n{}", index_of(graph, action));
    for node in &graph.nodes {
        writeln!(
            out,
            "{indent}{}[\"{}\"]",
            id(&node.action),
            mermaid_text(&node_label(node))
        )?;
    }
    if let Some(entry) = &graph.entry {
        match prefix {
            "" => writeln!(out, "{indent}start --> {}", id(entry))?,
            // A child's entry, marked as where it starts.
            _ => writeln!(out, "{indent}{prefix}start(( )) --> {}", id(entry))?,
        }
    }
    for edge in &graph.edges {
        let label = match edge.count {
            1 => String::new(),
            n => format!("|×{n}|"),
        };
        writeln!(
            out,
            "{indent}{} -->{label} {}",
            id(&edge.from),
            id(&edge.to)
        )?;
    }
    let failed: Vec<String> = graph
        .nodes
        .iter()
        .filter(|n| n.failed > 0)
        .map(|n| id(&n.action))
        .collect();
    if !failed.is_empty() {
        writeln!(out, "{indent}classDef failed stroke:#c00,stroke-width:2px")?;
        writeln!(out, "{indent}class {} failed", failed.join(","))?;
    }
    for (i, child) in graph.children.iter().enumerate() {
        let sub = format!("{prefix}c{i}");
        let title = child.label.as_deref().unwrap_or(&child.app_id);
        writeln!(out, "{indent}subgraph {sub} [\"{}\"]", mermaid_text(title))?;
        writeln!(out, "{indent}    direction LR")?;
        mermaid_body(child, &format!("{sub}_"), &format!("{indent}    "), out)?;
        writeln!(out, "{indent}end")?;
        if let Some(action) = &child.spawned_by {
            writeln!(out, "{indent}{} -.-> {sub}", id(action))?;
        }
    }
    Ok(())
}

// ===== DOT =====

/// A quoted DOT id or label.
fn q(s: &str) -> String {
    format!(
        "\"{}\"",
        clean(s).replace('\\', "\\\\").replace('"', "\\\"")
    )
}

fn dot(graph: &RunGraph, out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(out, "digraph {} {{", q(&graph.app_id))?;
    writeln!(out, "    rankdir=LR;")?;
    if !graph.children.is_empty() {
        writeln!(out, "    compound=true;")?;
    }
    writeln!(out, "    \"__start\" [shape=point];")?;
    dot_body(graph, "", "    ", out)?;
    if let Some(entry) = &graph.entry {
        writeln!(out, "    \"__start\" -> {};", q(entry))?;
    }
    writeln!(out, "}}")?;
    Ok(())
}

/// The root's node ids are its action names; a child's are prefixed by
/// its cluster (`c0/search`), labels showing the action alone.
fn dot_body(
    graph: &RunGraph,
    prefix: &str,
    indent: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id = |action: &str| q(&format!("{prefix}{action}"));
    for node in &graph.nodes {
        let color = if node.failed > 0 { ", color=red" } else { "" };
        writeln!(
            out,
            "{indent}{} [label={}{color}];",
            id(&node.action),
            q(&node_label(node))
        )?;
    }
    for edge in &graph.edges {
        let label = match edge.count {
            1 => String::new(),
            n => format!(" [label=\"×{n}\"]"),
        };
        writeln!(
            out,
            "{indent}{} -> {}{label};",
            id(&edge.from),
            id(&edge.to)
        )?;
    }
    for (i, child) in graph.children.iter().enumerate() {
        let cluster = format!("{prefix}c{i}");
        let title = child.label.as_deref().unwrap_or(&child.app_id);
        writeln!(
            out,
            "{indent}subgraph {} {{",
            q(&format!("cluster_{cluster}"))
        )?;
        writeln!(out, "{indent}    label={};", q(title))?;
        dot_body(child, &format!("{cluster}/"), &format!("{indent}    "), out)?;
        writeln!(out, "{indent}}}")?;
        if let (Some(action), Some(entry)) = (&child.spawned_by, &child.entry) {
            writeln!(
                out,
                "{indent}{} -> {} [style=dashed, lhead={}];",
                id(action),
                q(&format!("{cluster}/{entry}")),
                q(&format!("cluster_{cluster}"))
            )?;
        }
    }
    Ok(())
}
