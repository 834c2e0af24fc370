//! Every task of `shared/fixtures/eval` (prediction files scored by the unmodified upstream scorers): the score to
//! the last bit, the sample count, and every per-sample value.

use nvlm_eval::{score, SampleValue, Task};
use nvlm_testkit::fixtures;

fn as_f64(v: SampleValue) -> f64 {
    match v {
        SampleValue::Float(x) => x,
        SampleValue::Int(i) => i as f64,
    }
}

#[test]
fn every_fixture_task_scores_exactly() {
    for task in [
        "vqav2",
        "textvqa",
        "chartqa",
        "ai2d",
        "ocrbench",
        "mathvista",
        "mmmu",
        "docvqa",
        "realworldqa",
    ] {
        let dir = fixtures().join("eval").join(task);
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let predictions = std::fs::read_to_string(dir.join("predictions.jsonl")).unwrap();
        let gt: Option<serde_json::Value> = (task == "mmmu").then(|| {
            serde_json::from_str(&std::fs::read_to_string(dir.join("answer_dict.json")).unwrap()).unwrap()
        });
        let got = score(Task::from_name(task).unwrap(), &predictions, gt.as_ref())
            .unwrap_or_else(|e| panic!("{task}: {e}"));
        let per_expected = expected["per_sample"].as_object().unwrap();
        let mut mismatches = Vec::new();
        for (id, value) in &got.per_sample {
            let want = per_expected.get(id).and_then(|v| v.as_f64());
            if want != Some(as_f64(*value)) {
                mismatches.push(format!("{id}: got {value:?}, expected {want:?}"));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{task}: per-sample differences:\n{}",
            mismatches.join("\n")
        );
        assert_eq!(got.n as u64, expected["n"].as_u64().unwrap(), "{task}: n");
        match got.score {
            SampleValue::Int(v) => assert_eq!(Some(v), expected["score"].as_i64(), "{task}: score"),
            SampleValue::Float(v) => assert_eq!(
                v.to_bits(),
                expected["score"].as_f64().unwrap().to_bits(),
                "{task}: score {v} vs {}",
                expected["score"]
            ),
        }
    }
}

#[test]
fn malformed_predictions_are_clear_errors() {
    let err = score(
        Task::Vqav2,
        "{\"sample_id\": 1, \"answer\": \"x\"}\nnot json\n",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 1") || err.contains("line 2"), "{err}");
    let err = score(Task::Vqav2, "{\"sample_id\": 1, \"answer\": \"x\"}\n", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("gt_answer"), "{err}");
    let err = score(
        Task::Chartqa,
        "{\"sample_id\": 1, \"answer\": \"x\", \"gt_answer\": [\"a\", \"b\"]}\n",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("exactly one"), "{err}");
    assert!(score(Task::Ai2d, "", None).is_err());
    assert!(score(
        Task::Mmmu,
        "{\"sample_id\": \"validation_Art_1\", \"prediction\": \"A\", \"question_type\": \"open\"}\n",
        None
    )
    .is_err());
    let err = score(Task::Mathvista, "{\"sample_id\": \"1\", \"answer\": \"the\", \"gt_answer\": \"3\", \"question_type\": \"free_form\"}\n", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty"), "{err}");
    assert!(Task::from_name("coco").is_err());
}
