//! Every run, node and (at TRACE) call of a pipeline is a tracing span.
//! A test binary of its own, as it installs the global subscriber.

use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt;
use tributary_pipeline::{Pipeline, iter_source, map};

/// Records each new span's name and fields.
#[derive(Default, Clone)]
struct Spans(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct V(String);
        impl tracing::field::Visit for V {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={:?}", field.name(), value));
            }
        }
        let mut v = V(attrs.metadata().name().to_owned());
        attrs.record(&mut v);
        self.0.lock().unwrap().push(v.0);
    }
}

#[tokio::test]
async fn runs_nodes_and_calls_are_spans() {
    let spans = Spans::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone()))
        .unwrap();
    Pipeline::builder()
        .source("numbers", iter_source(0..3u32))
        .processor(
            "double",
            map(|x: u32| async move { Ok::<_, std::io::Error>(2 * x) }),
        )
        .edge("numbers", "double")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let got = spans.0.lock().unwrap().clone();
    let count = |s: &str| got.iter().filter(|g| *g == s).count();
    assert_eq!(count("pipeline.run"), 1, "{got:?}");
    assert_eq!(count("pipeline.node node=numbers"), 1, "{got:?}");
    assert_eq!(count("pipeline.node node=double"), 1, "{got:?}");
    for seq in 0..3 {
        assert_eq!(
            count(&format!("pipeline.item node=double seq={seq}")),
            1,
            "{got:?}"
        );
    }
}
