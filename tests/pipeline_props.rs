//! Property tests over random delays, capacities, concurrency and cancel
//! times: joins pair and order items exactly, and no item vanishes
//! uncounted, for every schedule.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tributary::pipeline::{
    Input, Join, Node, NodeContext, Pipeline, Processor, RunError, iter_source, processor,
};

use crate::pipeline_support::Collected;
use crate::support::Live;

fn paused_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// `f` of the input's items, after a delay of `delays[first item % len]` ms.
fn delayed(delays: Vec<u64>, f: fn(Vec<u64>) -> u64, live: Live) -> impl Processor<u64> {
    processor(move |input: Input<u64>, _ctx: NodeContext| {
        let guard = live.guard();
        let items = input.into_items();
        let d = delays[(items[0] as usize) % delays.len()];
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_millis(d)).await;
            Ok::<_, std::io::Error>(vec![f(items)])
        }
    })
}

fn delays() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0u64..6, 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The seed's diamond with random delays, capacities and concurrency:
    /// n3 zips (n1, n2) and n4 zips (n2, n3), so every pair must line up
    /// item for item, in order.
    #[test]
    fn zips_pair_item_i_with_item_i_under_any_schedule(
        d1 in delays(), d2 in delays(), d3 in delays(),
        cap in 1usize..4, conc in 1usize..4, n in 1u64..40,
    ) {
        let got = paused_rt().block_on(async move {
            let out = Collected::new();
            let live = Live::default();
            Pipeline::builder()
                .source("inp", iter_source(0..n))
                .node("n1", Node::processor(delayed(d1, |x| x[0] * 10, live.clone())).concurrency(conc).keep_order(true))
                .node("n2", Node::processor(delayed(d2, |x| x[0] * 10 + 1, live.clone())).concurrency(conc).keep_order(true))
                .node("n3", Node::processor(delayed(d3, |x| x[0] * 1000 + x[1], live.clone())).join(Join::Zip))
                .node("n4", Node::processor(out.sink()).join(Join::Zip))
                .edge("inp", "n1")
                .edge("n1", "n2")
                .edge("n1", "n3")
                .edge("n2", "n3")
                .edge("n2", "n4")
                .edge("n3", "n4")
                .default_capacity(cap)
                .build()
                .unwrap()
                .run()
                .await
                .unwrap();
            out.take()
        });
        // n1: 10i; n2: 100i + 1; n3 combines (10i, 100i + 1).
        let want: Vec<Input<u64>> = (0..n)
            .map(|i| Input::Zip(vec![100 * i + 1, 10 * i * 1000 + 100 * i + 1]))
            .collect();
        prop_assert_eq!(got, want);
    }

    /// Merges keep every input's order, whatever the delays.
    #[test]
    fn merge_keeps_each_inputs_order_under_any_schedule(
        d1 in delays(), d2 in delays(), cap in 1usize..4, conc in 1usize..4, n in 1u64..40,
    ) {
        let got = paused_rt().block_on(async move {
            let out = Collected::new();
            let live = Live::default();
            Pipeline::builder()
                .source("inp", iter_source(0..n))
                .node("a", Node::processor(delayed(d1, |x| x[0], live.clone())).concurrency(conc).keep_order(true))
                .node("b", Node::processor(delayed(d2, |x| x[0] + 1000, live.clone())))
                .node("m", Node::processor(out.sink()).join(Join::Merge))
                .edge("inp", "a")
                .edge("inp", "b")
                .edge("a", "m")
                .edge("b", "m")
                .default_capacity(cap)
                .build()
                .unwrap()
                .run()
                .await
                .unwrap();
            out.take()
        });
        let of = |name: &str| -> Vec<u64> {
            got.iter()
                .filter_map(|i| match i {
                    Input::Merge { from, item } if &**from == name => Some(*item),
                    _ => None,
                })
                .collect()
        };
        prop_assert_eq!(of("a"), (0..n).collect::<Vec<_>>());
        prop_assert_eq!(of("b"), (1000..1000 + n).collect::<Vec<_>>());
    }

    /// Cancel at a random moment: nothing stays alive, and every item the
    /// source emitted either completed at the sink or is counted as dropped.
    #[test]
    fn cancel_at_any_time_accounts_for_every_item(
        d1 in delays(), d2 in delays(), cap in 1usize..4, conc in 1usize..4,
        cancel_at in 0u64..60,
    ) {
        paused_rt().block_on(async move {
            let live = Live::default();
            let done = Arc::new(AtomicU64::new(0));
            let d = Arc::clone(&done);
            let sink_live = live.clone();
            let sink = processor(move |_input: Input<u64>, _ctx: NodeContext| {
                let (d, guard, delays) = (Arc::clone(&d), sink_live.guard(), d2.clone());
                async move {
                    let _guard = guard;
                    tokio::time::sleep(Duration::from_millis(delays[0])).await;
                    d.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(vec![])
                }
            });
            let run = Pipeline::builder()
                .source("src", iter_source(0..10_000u64))
                .node("a", Node::processor(delayed(d1, |x| x[0], live.clone())).concurrency(conc))
                .processor("sink", sink)
                .edge("src", "a")
                .edge("a", "sink")
                .default_capacity(cap)
                .build()
                .unwrap()
                .start();
            let handle = run.handle();
            tokio::time::sleep(Duration::from_millis(cancel_at)).await;
            handle.cancel().await;
            assert_eq!(live.now(), 0);
            assert_eq!(handle.live_tasks(), 0);
            let summary = match run.wait().await {
                Err(RunError::Cancelled { summary }) => *summary,
                // With no delays at all, the run is over (on the paused
                // clock) before the cancel.
                Ok(summary) => summary,
                Err(other) => panic!("{other:?}"),
            };
            let emitted = summary.node("src").unwrap().items_out;
            let a = summary.node("a").unwrap();
            let s = summary.node("sink").unwrap();
            assert_eq!(
                emitted,
                done.load(Ordering::SeqCst) + a.dropped + s.dropped,
                "{summary:?}"
            );
        });
    }
}
