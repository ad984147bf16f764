//! The real `contrastgeo embed` binary on good and bad input.

mod common;

fn run_embed(input: &[u8], extra: &[&str]) -> (i32, String, String) {
    let args: Vec<&str> = std::iter::once("embed")
        .chain(extra.iter().copied())
        .collect();
    common::run_contrastgeo(&args, input)
}

#[test]
fn embed_reports_bad_lines_with_their_numbers_and_embeds_the_rest() {
    let mut input = Vec::new();
    input.extend_from_slice(b"Sunset over Lake Austin tonight\n");
    input.extend_from_slice(b"\n");
    input.extend_from_slice(b"   \n");
    input.extend_from_slice(b"broken \xff\xfe utf8\n");
    input.extend_from_slice(b"{\"id\": \"p5\", \"text\": \"Go Hawks! Kinnick is loud\"}\n");
    input.extend_from_slice(b"{\"id\": \"p6\", \"text\": 42}\n");
    input.extend_from_slice("word ".repeat(20_000).as_bytes()); // a 100 KB line
    input.extend_from_slice(b"\n");
    let (code, stdout, stderr) = run_embed(&input, &[]);
    assert_eq!(
        code, 3,
        "rejected lines must give exit code 3; stderr: {stderr}"
    );
    let (records, lines) = common::jsonl_records(&stdout);
    assert_eq!(lines, vec![1, 5, 7]);
    assert_eq!(records[1]["id"], "p5");
    for record in &records {
        let v: Vec<f64> = record["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
    for (line, why) in [
        (2, "empty"),
        (3, "empty"),
        (4, "UTF-8"),
        (6, "not a string"),
    ] {
        let needle = format!("line {line}: ");
        let reported = stderr
            .lines()
            .find(|l| l.starts_with(&needle))
            .unwrap_or_else(|| panic!("{needle} missing in {stderr}"));
        assert!(reported.contains(why), "{reported}");
    }
}

#[test]
fn embed_fails_clearly_on_a_missing_model() {
    let (code, _, stderr) = run_embed(b"hello\n", &["--model", "/nonexistent/model"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("has no config.json"), "{stderr}");
}
