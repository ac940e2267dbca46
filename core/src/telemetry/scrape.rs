//! Reading Prometheus text as a scraper does: the sum of a metric's samples, chosen by
//! their labels. The local cluster's launcher and the benchmarks read `/metrics` with it, and
//! so do the tests (`crate::testing`).

/// The sum of every sample in Prometheus text `metrics` named `name` whose labels contain
/// each of `labels` (written as they appear, such as `source="peer"`); 0 when none does.
pub fn metric_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    samples(metrics, name)
        .filter(|(l, _)| labels.iter().all(|want| l.contains(want)))
        .map(|(_, v)| v)
        .sum()
}

/// The value of the one sample named `name` with no labels, if there is one.
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    samples(metrics, name)
        .find(|(l, _)| l.is_empty())
        .map(|(_, v)| v)
}

/// The samples of `name`: each one's label text (`{a="b",…}`, or empty) and value.
fn samples<'a>(metrics: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(move |l| {
            let (series, value) = l.trim_end().rsplit_once(' ')?;
            let (n, labels) = match series.find('{') {
                Some(i) => series.split_at(i),
                None => (series, ""),
            };
            (n == name).then_some(())?;
            Some((labels, value.parse::<f64>().ok()?))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_total x\n# TYPE x_total counter\n\
        x_total{source=\"peer\",kind=\"a\"} 10\nx_total{source=\"origin\"} 5\n\
        x_total_more 7\nup 1\n";

    #[test]
    fn sums_the_samples_whose_labels_match() {
        assert_eq!(metric_sum(TEXT, "x_total", &[]), 15.0);
        assert_eq!(metric_sum(TEXT, "x_total", &["source=\"peer\""]), 10.0);
        assert_eq!(
            metric_sum(TEXT, "x_total", &["source=\"peer\"", "kind=\"b\""]),
            0.0
        );
        assert_eq!(metric_sum(TEXT, "missing", &[]), 0.0);
    }

    #[test]
    fn a_name_is_matched_whole() {
        assert_eq!(metric_sum(TEXT, "x_total_more", &[]), 7.0);
        assert_eq!(metric_value(TEXT, "up"), Some(1.0));
        assert_eq!(metric_value(TEXT, "x_total"), None);
    }
}
