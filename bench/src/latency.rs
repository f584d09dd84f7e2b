//! The latency scenario's results (issue 21: "CPU does not grow with latency"): CPU per event of
//! a function while the AWS endpoint holds every answer for 0, 10 or 50 ms (the counting proxy's
//! delay). Waiting costs no CPU; a process whose CPU per event grows with the delay spends it
//! while requests are in flight (timers, polls), which a fractional-vCPU Lambda pays for in
//! duration.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::report::Target;
use crate::stats::median;

/// The widest spread of CPU per event across the delays: (max − min) / min.
pub const LATENCY_MAX_SPREAD_PCT: f64 = 10.0;

/// One function path at one endpoint delay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyPoint {
    pub delay_ms: u64,
    /// CPU µs per event of each round (interleaved with the other delays).
    pub cpu_us_rounds: Vec<f64>,
    pub wall_us_per_event: f64,
    /// Voluntary context switches per event: grows with the delay when timers wake the
    /// process while its requests are in flight.
    #[serde(default)]
    pub wakeups_per_event: f64,
    pub aws_per_event: f64,
}

impl LatencyPoint {
    pub fn cpu_us_per_event(&self) -> f64 {
        median(&self.cpu_us_rounds)
    }
}

/// One function path at every delay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyCase {
    pub scenario: String,
    pub binary: String,
    /// Measured events per round and delay.
    pub events: usize,
    pub failed_events: usize,
    pub points: Vec<LatencyPoint>,
}

impl LatencyCase {
    /// (max − min) / min of the median CPU per event across the delays, in percent.
    pub fn spread_pct(&self) -> f64 {
        let cpu: Vec<f64> = self.points.iter().map(LatencyPoint::cpu_us_per_event).collect();
        let min = cpu.iter().copied().fold(f64::INFINITY, f64::min);
        let max = cpu.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if cpu.len() < 2 || min <= 0.0 {
            return f64::NAN;
        }
        (max / min - 1.0) * 100.0
    }

    fn delays(&self) -> String {
        self.points
            .iter()
            .map(|p| p.delay_ms.to_string())
            .collect::<Vec<_>>()
            .join("/")
    }
}

pub fn targets(cases: &[LatencyCase]) -> Vec<Target> {
    cases
        .iter()
        .filter(|c| !crate::report::is_reference(&c.binary))
        .map(|c| {
            let spread = c.spread_pct();
            let met = spread <= LATENCY_MAX_SPREAD_PCT && c.failed_events == 0;
            Target {
                what: format!(
                    "CPU per event across AWS endpoint delays of {} ms, {} (`{}`)",
                    c.delays(),
                    c.scenario,
                    c.binary
                ),
                value: format!("{spread:.1} % spread"),
                limit: format!("≤ {LATENCY_MAX_SPREAD_PCT} %"),
                met,
                miss: (!met).then(|| format!("+{:.1} points", spread - LATENCY_MAX_SPREAD_PCT)),
            }
        })
        .collect()
}

pub fn render(md: &mut String, cases: &[LatencyCase]) {
    let Some(first) = cases.first() else {
        return;
    };
    let rounds = first.points.first().map(|p| p.cpu_us_rounds.len()).unwrap_or(0);
    let _ = writeln!(md, "\n## CPU per event against a slower AWS endpoint\n");
    let delays: Vec<u64> = first.points.iter().map(|p| p.delay_ms).collect();
    let head: Vec<String> = delays.iter().map(|d| format!("CPU µs/event at {d} ms")).collect();
    let walls: Vec<String> = delays.iter().map(|d| format!("wall µs at {d} ms")).collect();
    let _ = writeln!(
        md,
        "| scenario | function | events | {} | spread | {} | wake-ups per event | AWS requests per event |",
        head.join(" | "),
        walls.join(" | ")
    );
    let _ = writeln!(md, "|{}", " --- |".repeat(6 + 2 * delays.len()));
    for c in cases {
        let cpu: Vec<String> = c
            .points
            .iter()
            .map(|p| format!("{:.0}", p.cpu_us_per_event()))
            .collect();
        let wall: Vec<String> = c.points.iter().map(|p| format!("{:.0}", p.wall_us_per_event)).collect();
        let requests: Vec<String> = c.points.iter().map(|p| format!("{:.2}", p.aws_per_event)).collect();
        let wakeups: Vec<String> = c.points.iter().map(|p| format!("{:.1}", p.wakeups_per_event)).collect();
        let _ = writeln!(
            md,
            "| {} | `{}` | {}{} | {} | {:.1} % | {} | {} | {} |",
            c.scenario,
            c.binary,
            c.events,
            if c.failed_events > 0 {
                format!(" (**{} failed**)", c.failed_events)
            } else {
                String::new()
            },
            cpu.join(" | "),
            c.spread_pct(),
            wall.join(" | "),
            wakeups.join(" / "),
            requests.join(" / "),
        );
    }
    let _ = writeln!(
        md,
        "\nThe counting proxy holds every AWS answer for the delay before returning it; the function is \
         the same binary, driven one event at a time as in the warm table. CPU per event is the \
         median of {rounds} rounds (the delays interleaved, their order rotating every round); spread = \
         (max − min) / min across the delays; wake-ups = voluntary context switches per event (at each \
         delay). Waiting for an answer costs no CPU: wake-ups that grow with the delay are timers or polls \
         firing while requests are in flight. The reference row (plain SDK configuration, no target) is the \
         control: CPU that grows there without more wake-ups is the machine (caches gone cold while the \
         process waits on a shared host), not the function."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(cpu: &[&[f64]]) -> LatencyCase {
        LatencyCase {
            scenario: "s".into(),
            binary: "b".into(),
            events: 10,
            failed_events: 0,
            points: cpu
                .iter()
                .zip([0, 10, 50])
                .map(|(rounds, delay_ms)| LatencyPoint {
                    delay_ms,
                    cpu_us_rounds: rounds.to_vec(),
                    wall_us_per_event: 0.0,
                    wakeups_per_event: 0.0,
                    aws_per_event: 1.0,
                })
                .collect(),
        }
    }

    #[test]
    fn spread_is_max_over_min_of_the_round_medians() {
        let c = case(&[&[500.0, 400.0, 600.0], &[520.0, 900.0, 510.0], &[545.0]]);
        // medians 500, 520, 545
        assert!((c.spread_pct() - 9.0).abs() < 1e-9);
        let t = targets(&[c]);
        assert!(t[0].met);
        assert!(t[0].what.contains("0/10/50 ms"));
    }

    #[test]
    fn a_growing_cpu_misses_the_target() {
        let c = case(&[&[500.0], &[700.0], &[1500.0]]);
        assert!((c.spread_pct() - 200.0).abs() < 1e-9);
        assert!(!targets(&[c])[0].met);
    }
}
