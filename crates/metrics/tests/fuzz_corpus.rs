//! Replays the committed corpus of the `usage_params` fuzz target.

#[path = "../../../testdata/fuzz/replay.rs"]
mod replay;

#[test]
fn usage_params_corpus() {
    replay::corpus("usage_params")
        .iter()
        .for_each(|input| meterbase_metrics::fuzzing::check_usage_params(input));
}
