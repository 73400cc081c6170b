//! Measurements, their statistics and their JSON lines.

use std::sync::OnceLock;

use serde_json::{Value, json};

static CONSUMER: OnceLock<&'static str> = OnceLock::new();

/// Where the scenarios' consumers run (`main` or `task`), printed with
/// every measurement.
pub(crate) fn set_consumer(place: &'static str) {
    let _ = CONSUMER.set(place);
}

/// Median, min and max of a set of samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Stats {
    pub(crate) fn of(samples: &[f64]) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let mid = s.len() / 2;
        let median = if s.len() % 2 == 1 {
            s[mid]
        } else {
            (s[mid - 1] + s[mid]) / 2.0
        };
        Stats {
            median,
            min: s[0],
            max: s[s.len() - 1],
        }
    }

    fn json(&self) -> Value {
        json!({ "median": round(self.median), "min": round(self.min), "max": round(self.max) })
    }
}

/// How a ratio is checked against its target.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// The ratio (or value) must be at most this.
    AtMost(f64),
    /// The ratio (or value) must be at least this.
    AtLeast(f64),
}

impl Target {
    fn met(self, x: f64) -> bool {
        match self {
            Target::AtMost(t) => x <= t,
            Target::AtLeast(t) => x >= t,
        }
    }

    fn describe(self, what: &str) -> String {
        match self {
            Target::AtMost(t) => format!("{what} <= {t}"),
            Target::AtLeast(t) => format!("{what} >= {t}"),
        }
    }
}

/// One measurement: a scenario's samples, its baseline's, and its targets.
#[derive(Debug)]
pub(crate) struct Measurement {
    scenario: String,
    params: Value,
    unit: &'static str,
    samples: Vec<f64>,
    baseline: Option<(String, Vec<f64>)>,
    targets: Vec<(&'static str, Target)>,
    peak_rss_kb: Option<u64>,
    extra: Vec<(&'static str, Value)>,
}

impl Measurement {
    pub(crate) fn new(scenario: impl Into<String>, params: Value, unit: &'static str) -> Self {
        Measurement {
            scenario: scenario.into(),
            params,
            unit,
            samples: Vec::new(),
            baseline: None,
            targets: Vec::new(),
            peak_rss_kb: None,
            extra: Vec::new(),
        }
    }

    pub(crate) fn samples(mut self, samples: Vec<f64>) -> Self {
        self.samples = samples;
        self
    }

    /// A baseline measured in the same run; the ratio is `ours / baseline`
    /// of the medians (for times lower is better, for rates higher).
    pub(crate) fn baseline(mut self, name: &str, samples: Vec<f64>) -> Self {
        self.baseline = Some((name.to_owned(), samples));
        self
    }

    /// A target on the ratio to the baseline.
    pub(crate) fn target_ratio(mut self, target: Target) -> Self {
        self.targets.push(("ratio", target));
        self
    }

    /// A target on the median itself.
    pub(crate) fn target_median(mut self, target: Target) -> Self {
        self.targets.push(("median", target));
        self
    }

    pub(crate) fn peak_rss_kb(mut self, kb: u64) -> Self {
        self.peak_rss_kb = Some(kb);
        self
    }

    pub(crate) fn extra(mut self, key: &'static str, value: Value) -> Self {
        self.extra.push((key, value));
        self
    }

    /// The JSON line (also printed).
    pub(crate) fn emit(self) -> Value {
        let stats = Stats::of(&self.samples);
        let mut line = json!({
            "scenario": self.scenario,
            "consumer": CONSUMER.get().copied().unwrap_or("main"),
            "params": self.params,
            "unit": self.unit,
            "repeats": self.samples.len(),
        });
        let obj = line.as_object_mut().expect("object");
        for (k, v) in stats.json().as_object().expect("object") {
            obj.insert(k.clone(), v.clone());
        }
        let mut ratio = None;
        if let Some((name, base)) = &self.baseline {
            let b = Stats::of(base);
            let r = stats.median / b.median;
            ratio = Some(r);
            let mut bj = b.json();
            bj["name"] = json!(name);
            obj.insert("baseline".into(), bj);
            obj.insert("ratio".into(), json!(round(r)));
        }
        if let Some(kb) = self.peak_rss_kb {
            obj.insert("peak_rss_kb".into(), json!(kb));
        }
        for (k, v) in self.extra {
            obj.insert(k.into(), v);
        }
        if !self.targets.is_empty() {
            let mut all = true;
            let mut described = Vec::new();
            for (what, target) in &self.targets {
                let x = match *what {
                    "ratio" => ratio.expect("a ratio target needs a baseline"),
                    _ => stats.median,
                };
                all &= target.met(x);
                described.push(target.describe(what));
            }
            obj.insert("target".into(), json!(described.join(" and ")));
            obj.insert("met".into(), json!(all));
        }
        println!("{line}");
        line
    }
}

/// Three significant decimals are plenty for noisy timings.
fn round(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 4 - x.abs().log10().ceil() as i32;
    let f = 10f64.powi(digits.max(0));
    (x * f).round() / f
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`); 0 where there
/// is no procfs.
pub(crate) fn proc_status_kb(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
