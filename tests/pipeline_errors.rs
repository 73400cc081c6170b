//! Per-node error policies: fail the pipeline, skip the input (counted),
//! or send it to the dead letters with its error; a panicking node.

use std::time::Duration;

use tributary::pipeline::{
    ErrorPolicy, Input, Node, NodeContext, Pipeline, PipelineBuilder, RunError, iter_source,
    processor,
};

use crate::pipeline_support::Collected;

#[derive(Debug)]
struct Three(u64);

impl std::fmt::Display for Three {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is a multiple of three", self.0)
    }
}

impl std::error::Error for Three {}

/// inp (0..30) -> check (fails on multiples of 3, with `policy`) -> out
fn checked(policy: ErrorPolicy, out: &Collected<u64>) -> PipelineBuilder<u64> {
    let check = processor(|input: Input<u64>, _ctx: NodeContext| async move {
        let n = input.into_single().unwrap();
        if n.is_multiple_of(3) {
            return Err(Three(n));
        }
        Ok(vec![n])
    });
    Pipeline::builder()
        .source("inp", iter_source(0..30u64))
        .node("check", Node::processor(check).on_error(policy))
        .processor("out", out.sink())
        .edge("inp", "check")
        .edge("check", "out")
}

fn not_three() -> Vec<u64> {
    (0..30).filter(|n| n % 3 != 0).collect()
}

#[tokio::test]
async fn fail_policy_fails_the_pipeline_naming_the_node_and_its_error() {
    let out = Collected::new();
    let err = checked(ErrorPolicy::Fail, &out)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap_err();
    let RunError::NodeFailed {
        node,
        source,
        summary,
    } = &err
    else {
        panic!("expected a node failure, got {err:?}");
    };
    assert_eq!(node, "check");
    assert_eq!(source.to_string(), "0 is a multiple of three");
    assert!(source.downcast_ref::<Three>().is_some());
    assert_eq!(
        err.to_string(),
        "node check failed: 0 is a multiple of three"
    );
    assert!(out.items().is_empty(), "the first input failed");
    assert!(summary.nodes.iter().all(|n| n.ended));
}

#[tokio::test]
async fn skip_policy_skips_and_counts_failed_inputs() {
    let out = Collected::new();
    let summary = checked(ErrorPolicy::Skip, &out)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(out.items(), not_three());
    let check = summary.node("check").unwrap();
    assert_eq!(check.skipped, 10);
    assert_eq!((check.items_in, check.items_out), (30, 20));
}

#[tokio::test]
async fn dead_letter_policy_sends_each_failed_input_with_its_error() {
    let out = Collected::new();
    let mut pipeline = checked(ErrorPolicy::DeadLetter, &out)
        .dead_letter_capacity(2)
        .build()
        .unwrap();
    let mut letters = pipeline.dead_letters();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(letter) = letters.recv().await {
            got.push((
                letter.node.to_string(),
                letter.input,
                letter.error.to_string(),
            ));
        }
        got
    });
    let summary = pipeline.run().await.unwrap();
    let got = reader.await.unwrap();
    let want: Vec<_> = (0..30)
        .step_by(3)
        .map(|n| {
            (
                "check".to_owned(),
                Input::One(n),
                format!("{n} is a multiple of three"),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(out.items(), not_three());
    let check = summary.node("check").unwrap();
    assert_eq!(
        (check.dead_lettered, check.skipped, check.dropped),
        (10, 0, 0)
    );
}

#[tokio::test]
async fn dead_letters_without_a_receiver_are_counted_as_dropped() {
    let out = Collected::new();
    let summary = checked(ErrorPolicy::DeadLetter, &out)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let check = summary.node("check").unwrap();
    assert_eq!((check.dead_lettered, check.dropped), (0, 10));
    assert_eq!(out.items(), not_three());
}

#[tokio::test(start_paused = true)]
async fn a_failure_cancels_the_other_nodes_and_counts_their_work_as_dropped() {
    let out = Collected::new();
    let slow = processor(|input: Input<u64>, _ctx: NodeContext| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, std::io::Error>(input.into_items())
    });
    let boom = processor(|input: Input<u64>, _ctx: NodeContext| async move {
        let n = input.into_single().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        if n == 3 { Err(Three(n)) } else { Ok(vec![n]) }
    });
    let err = Pipeline::builder()
        .source("inp", iter_source(0..10u64))
        .node("slow", Node::processor(slow).concurrency(4))
        .processor("boom", boom)
        .processor("out", out.sink())
        .edge("inp", "slow")
        .edge("inp", "boom")
        .edge("boom", "out")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RunError::NodeFailed { node, .. } if node == "boom"),
        "{err:?}"
    );
    // All ten items were out at once (the edges hold 16): `slow` had four
    // in flight and six waiting, `boom` failed on 3 with six waiting.
    let summary = err.summary();
    let slow = summary.node("slow").unwrap();
    assert_eq!((slow.items_in, slow.dropped), (4, 10));
    let boom = summary.node("boom").unwrap();
    assert_eq!((boom.items_in, boom.dropped), (4, 6));
    assert_eq!(out.items(), vec![0, 1, 2]);
}

#[tokio::test]
async fn a_panicking_processor_fails_the_run_with_node_panicked() {
    let boom = processor(|input: Input<u64>, _ctx: NodeContext| async move {
        let n = input.into_single().unwrap();
        assert!(n < 5, "processor gave up at {n}");
        Ok::<_, std::io::Error>(vec![n])
    });
    let out = Collected::new();
    let err = Pipeline::builder()
        .source("inp", iter_source(0..10u64))
        .processor("boom", boom)
        .processor("out", out.sink())
        .edge("inp", "boom")
        .edge("boom", "out")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RunError::NodePanicked { node, .. } if node == "boom"),
        "{err:?}"
    );
    assert!(
        err.summary()
            .nodes
            .iter()
            .all(|n| n.ended && n.in_flight == 0)
    );
    assert_eq!(out.items(), vec![0, 1, 2, 3, 4]);
}
