//! Samples, their medians and percentiles, and the markdown they are reported in.

use std::fmt::Write;
use std::time::Duration;

/// One scenario's results.
pub(crate) struct Section {
    pub(crate) title: String,
    pub(crate) goal: String,
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) notes: Vec<String>,
}

impl Section {
    pub(crate) fn new(title: &str, goal: &str, header: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            goal: goal.to_owned(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {}\n\nGoal: {}\n", self.title, self.goal);
        // A skipped scenario has no rows: its note says why, under no empty table.
        if !self.rows.is_empty() {
            let _ = writeln!(out, "| {} |", self.header.join(" | "));
            let _ = writeln!(
                out,
                "|{}|",
                self.header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
            );
        }
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n{note}");
        }
        out
    }
}

/// The `q` quantile (0.0..=1.0) of `samples`, nearest rank.
pub(crate) fn quantile<T: Copy + Ord>(samples: &[T], q: f64) -> Option<T> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The median of floating-point samples.
pub(crate) fn median_f64(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A duration for a table cell.
pub(crate) fn ms(duration: Option<Duration>) -> String {
    match duration {
        Some(d) if d < Duration::from_millis(10) => format!("{:.3} ms", d.as_secs_f64() * 1e3),
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
        None => "n/a".to_owned(),
    }
}

/// A ratio for a table cell.
pub(crate) fn ratio(value: f64, baseline: f64) -> String {
    if baseline > 0.0 && value.is_finite() {
        format!("{:.2}x", value / baseline)
    } else {
        "n/a".to_owned()
    }
}
