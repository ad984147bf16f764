//! Refusals and limits through the real binary: out-of-range flags (usage errors, exit 2), broken model and
//! checkpoint configs (exit 1, naming the field), rejected input lines (exit 3), a line too long to keep,
//! plain logs when stderr is a file, and data found through the data home wherever the binary runs.

mod common;

use std::ffi::OsStr;
use std::path::Path;

/// Runs the binary and expects a usage error naming `flag`: exit code 2, nothing written to stdout.
fn refused_flag(args: &[&str], flag: &str) {
    let (code, stdout, stderr) = common::run_contrastgeo(args, b"");
    assert_eq!(code, 2, "{args:?} must be a usage error: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(flag),
        "{args:?}: the message must name {flag}: {stderr}"
    );
}

#[test]
fn out_of_range_flags_are_usage_errors_naming_the_flag() {
    let train = |extra: &[&str]| -> Vec<String> {
        [
            "train", "--data", "d.jsonl", "--cities", "c.jsonl", "--out", "o",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    for (extra, flag) in [
        (vec!["--tau", "0"], "--tau"),
        (vec!["--tau=-0.5"], "--tau"),
        (vec!["--tau", "NaN"], "--tau"),
        (vec!["--tau", "inf"], "--tau"),
        (vec!["--lr=-1e-4"], "--lr"),
        (vec!["--lr", "nan"], "--lr"),
        (vec!["--head-lr=-1"], "--head-lr"),
        (vec!["--lambda-tlm", "nan"], "--lambda-tlm"),
        (vec!["--shots", "0"], "--shots"),
        (vec!["--train-batch", "0"], "--train-batch"),
        (vec!["--radius-km", "0"], "--radius-km"),
        (vec!["--batch-size", "0"], "--batch-size"),
    ] {
        let args = train(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused_flag(&args, flag);
    }
    refused_flag(&["locate", "--top-k", "0"], "--top-k");
    refused_flag(&["locate", "--neighbours", "0"], "--neighbours");
    refused_flag(&["locate", "--prompt-weight", "1.5"], "--prompt-weight");
    refused_flag(&["locate", "--prompt-weight", "NaN"], "--prompt-weight");
    refused_flag(&["eval", "--retrieval-weight", "inf"], "--retrieval-weight");
    refused_flag(&["eval", "--prompt-weight", "nan"], "--prompt-weight");
    refused_flag(&["eval", "--shots", "1,0"], "--shots");
    refused_flag(&["embed", "--no-such-flag"], "--no-such-flag");
    // Half precision is a GPU option: the CPU runs f32.
    refused_flag(&["embed", "--device", "cpu", "--dtype", "f16"], "--dtype");
    refused_flag(&["embed", "--device", "cpu", "--dtype", "bf16"], "--dtype");
}

/// A model directory whose `config.json` is the base model's with `edit` applied, beside the real weights.
fn model_with_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let base = common::model_files();
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&base.config).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    std::os::unix::fs::symlink(&base.weights, model.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink(&base.tokenizer, model.join("tokenizer.json")).unwrap();
    model
}

#[test]
fn a_model_config_no_checkpoint_can_have_is_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, edit, field) in [
        (
            "zero-heads",
            Box::new(|c: &mut serde_json::Value| c["num_attention_heads"] = 0.into())
                as Box<dyn FnOnce(&mut serde_json::Value)>,
            "num_attention_heads",
        ),
        (
            "five-heads",
            Box::new(|c: &mut serde_json::Value| c["num_attention_heads"] = 5.into()),
            "not divisible by `num_attention_heads`",
        ),
        (
            "zero-width",
            Box::new(|c: &mut serde_json::Value| c["hidden_size"] = 0.into()),
            "hidden_size",
        ),
    ] {
        let model = model_with_config(&tmp.path().join(name), edit);
        let (code, stdout, stderr) =
            common::run_contrastgeo(&["embed", "--model", model.to_str().unwrap()], b"hello\n");
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(field), "{name}: {stderr}");
        assert!(stderr.contains("config.json"), "{name}: {stderr}");
    }
}

#[test]
fn a_checkpoint_with_an_unknown_fusion_or_a_bad_temperature_is_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (fusion, tau, needle) in [
        ("\"bogus\"", "0.03", "`fusion`"),
        ("\"concat\"", "-1.0", "`tau`"),
    ] {
        let checkpoint = model_with_config(&tmp.path().join(format!("ck-{tau}")), |_| {});
        std::fs::write(
            checkpoint.join("contrastgeo.json"),
            format!("{{\"format\": 1, \"model_id\": \"x\", \"fusion\": {fusion}, \"tau\": {tau}}}"),
        )
        .unwrap();
        let (code, _, stderr) = common::run_contrastgeo(
            &[
                "locate",
                "--checkpoint",
                checkpoint.to_str().unwrap(),
                "--store",
                tmp.path().join("no-store").to_str().unwrap(),
            ],
            b"hello\n",
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
        assert!(stderr.contains("contrastgeo.json"), "{stderr}");
    }
}

#[test]
fn a_line_too_long_to_keep_is_reported_and_the_lines_around_it_are_embedded() {
    let mut input = b"first post\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 3 << 20)); // a 3 MiB line, over the 1 MiB cap
    input.extend_from_slice(b"\nthird post\n");
    let (code, stdout, stderr) = common::run_contrastgeo(&["embed"], &input);
    assert_eq!(code, 3, "{stderr}");
    let (_, lines) = common::jsonl_records(&stdout);
    assert_eq!(lines, vec![1, 3]);
    assert!(
        stderr.contains("line 2: line of 3145728 bytes is longer than the limit"),
        "{stderr}"
    );
}

#[test]
fn logs_written_to_a_file_have_no_colour_codes_and_say_where_data_is() {
    // stderr is a pipe here, as with `2> log.txt`.
    let (code, _, stderr) = common::run_contrastgeo_in(
        &["embed"],
        b"hello\n",
        &[("RUST_LOG", OsStr::new("info"))],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape in a log file: {stderr:?}"
    );
    assert!(stderr.contains("data home"), "{stderr}");
    assert!(stderr.contains("loading encoder"), "{stderr}");
}

#[test]
fn data_is_found_through_the_data_home_not_the_checkout_or_the_working_directory() {
    // From an unrelated directory, with the default home: the model set up by tools/setup.sh is found.
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) =
        common::run_contrastgeo_in(&["embed"], b"hello\n", &[], Some(elsewhere.path()));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1);

    // An empty CONTRASTGEO_HOME is where the binary looks, and the error says so and how to fix it.
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = common::run_contrastgeo_in(
        &["embed"],
        b"hello\n",
        &[("CONTRASTGEO_HOME", home.path().as_os_str())],
        Some(elsewhere.path()),
    );
    assert_eq!(code, 1, "{stderr}");
    let expected = home.path().join("models/all-MiniLM-L6-v2");
    assert!(
        stderr.contains(expected.to_str().unwrap()),
        "the error names the home's model directory: {stderr}"
    );
    assert!(stderr.contains("tools/setup.sh"), "{stderr}");
    assert!(
        !stderr.contains(env!("CARGO_MANIFEST_DIR")),
        "nothing is looked up in the checkout: {stderr}"
    );
}

/// `contrastgeo train` on `data` against the fixture cities, as short as training gets (one step of 4 posts,
/// one shot per city), writing to `out`: (exit code, stdout, stderr).
fn train_one_step(data: &std::path::Path, out: &std::path::Path) -> (i32, String, String) {
    common::run_contrastgeo(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--cities",
            common::fixture("cities.jsonl").to_str().unwrap(),
            "--shots",
            "1",
            "--epochs",
            "1",
            "--min-steps",
            "1",
            "--train-batch",
            "4",
            "--out",
            out.to_str().unwrap(),
        ],
        b"",
    )
}

#[test]
fn train_draws_from_posts_without_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("posts.jsonl");
    let posts: String = std::fs::read_to_string(common::fixture("posts.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut post: serde_json::Value = serde_json::from_str(line).unwrap();
            post.as_object_mut().unwrap().remove("id");
            format!("{post}\n")
        })
        .collect();
    std::fs::write(&data, posts).unwrap();
    let out = tmp.path().join("ck");
    let (code, _, stderr) = train_one_step(&data, &out);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("support=0"), "{stderr}");
    assert!(out.join("contrastgeo.json").is_file(), "{stderr}");
}

#[test]
fn train_writes_its_checkpoint_and_exits_3_when_it_rejected_input_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("posts.jsonl");
    let mut posts = std::fs::read_to_string(common::fixture("posts.jsonl")).unwrap();
    posts.push_str("{\"text\": \"no place at all\"}\n{broken\n");
    std::fs::write(&data, posts).unwrap();
    let out = tmp.path().join("ck");
    let (code, _, stderr) = train_one_step(&data, &out);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("posts.jsonl:21: neither city_id nor lat/lon"),
        "{stderr}"
    );
    assert!(stderr.contains("posts.jsonl:22:"), "{stderr}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("contrastgeo.json")).unwrap())
            .unwrap();
    assert!(
        config["model_id"].as_str().unwrap().starts_with("trained:"),
        "{config}"
    );
}
