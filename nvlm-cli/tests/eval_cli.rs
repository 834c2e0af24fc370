//! `nvlm eval` as users run it: scoring fixture predictions, an end-to-end run (with resume) on the synthetic
//! dataset with the embedded model, the report, and clear errors for malformed files.

use nvlm_testkit::{fixtures, scratch};
use std::path::PathBuf;
use std::process::{Command, Output};

fn nvlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvlm"))
        .args(args)
        .output()
        .expect("running nvlm")
}

#[test]
fn score_prints_the_contract_line() {
    let dir = fixtures().join("eval/mmmu");
    let out = nvlm(&[
        "eval",
        "score",
        "--task",
        "mmmu",
        "--predictions",
        dir.join("predictions.jsonl").to_str().unwrap(),
        "--gt",
        dir.join("answer_dict.json").to_str().unwrap(),
        "--per-sample",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["task"], "mmmu");
    assert_eq!(line["score"].as_f64(), Some(78.3));
    assert_eq!(line["n"], 46);
    assert_eq!(line["per_sample"].as_object().unwrap().len(), 46);
}

#[test]
fn run_resume_and_report_on_the_synthetic_dataset() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nvlm-eval/tests/data/synthetic-textvqa");
    let output = scratch("eval-cli", "textvqa.jsonl");
    let _ = std::fs::remove_file(&output);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "run",
            "--task",
            "textvqa",
            "--data",
            data.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        nvlm(&args)
    };
    let first = run(&["--limit", "2"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = std::fs::read_to_string(&output).unwrap();
    assert_eq!(text.lines().count(), 2);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["sample_id"].is_number()
                && v["answer"].is_string()
                && v["gt_answer"].as_array().unwrap().len() == 10
        );
        assert!(v["prompt"]
            .as_str()
            .unwrap()
            .ends_with("Answer the question using a single word or phrase."));
        assert!(!v["answer"].as_str().unwrap().contains('\n'), "first line only");
    }
    // Without --resume an existing output is refused; with it, only the remaining samples run.
    assert!(!run(&[]).status.success());
    let resumed = run(&["--resume"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 4);
    let score: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(
        (score["task"].as_str(), score["n"].as_u64()),
        (Some("textvqa"), Some(4))
    );
    assert!(score["score"].as_f64().unwrap() >= 0.0);

    let scores = scratch("eval-cli", "scores.jsonl");
    std::fs::write(&scores, String::from_utf8_lossy(&resumed.stdout).as_bytes()).unwrap();
    let report = nvlm(&["eval", "report", scores.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&report.stdout);
    assert!(table.contains("| textvqa |") && table.contains("82.6"), "{table}");
}

#[test]
fn malformed_inputs_are_clear_errors() {
    let bad = scratch("eval-cli", "bad.jsonl");
    std::fs::write(
        &bad,
        "{\"sample_id\": 1, \"answer\": \"x\", \"gt_answer\": [\"x\"]}\n{oops\n",
    )
    .unwrap();
    let out = nvlm(&[
        "eval",
        "score",
        "--task",
        "ai2d",
        "--predictions",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let out = nvlm(&[
        "eval",
        "score",
        "--task",
        "coco",
        "--predictions",
        bad.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task"));
    let out = nvlm(&["eval", "run", "--task", "textvqa", "--data", "/nonexistent"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("annotations"));
}

#[test]
fn mmmu_mathvista_and_realworldqa_runs_produce_scorable_predictions() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nvlm-eval/tests/data");
    for (task, n) in [("mmmu", 2), ("mathvista", 2), ("realworldqa", 1)] {
        let output = scratch("eval-cli", &format!("{task}.jsonl"));
        let _ = std::fs::remove_file(&output);
        let out = nvlm(&[
            "eval",
            "run",
            "--task",
            task,
            "--data",
            data.join(format!("synthetic-{task}")).to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{task}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let score: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (score["task"].as_str(), score["n"].as_u64()),
            (Some(task), Some(n)),
            "{task}"
        );
        // The file scores again through `eval score` (MMMU with the answer_dict.json written beside it).
        let mut args = vec![
            "eval",
            "score",
            "--task",
            task,
            "--predictions",
            output.to_str().unwrap(),
        ];
        let gt = output.with_extension("answer_dict.json");
        if task == "mmmu" {
            args.extend(["--gt", gt.to_str().unwrap()]);
        }
        let again = nvlm(&args);
        assert!(
            again.status.success(),
            "{task}: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap(),
            score
        );
    }
}
