//! Property tests of every input parser (bulk post input as plain lines, JSONL, CSV and TSV; labelled posts;
//! city records): whatever the bytes, nothing panics, every bad record is reported with its line, and the
//! good records around it are kept unchanged. Bounded (a few hundred cases each) so they run in CI.

use std::path::Path;

use contrastgeo::data::parse_labelled_posts;
use contrastgeo::geo::{CityTable, GeoError};
use contrastgeo::input::{read_all, InputFormat, InputLine};
use proptest::prelude::*;

/// Post texts with what breaks naive parsers: quotes, commas, tabs, CR/LF, braces, non-ASCII, a BOM.
fn post_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-zA-Z0-9 ]{1,8}",
            Just("\"".to_string()),
            Just(",".to_string()),
            Just("\t".to_string()),
            Just("\r\n".to_string()),
            Just("\n".to_string()),
            Just("{".to_string()),
            Just("é東🌊".to_string()),
            Just("\u{feff}".to_string()),
        ],
        1..8,
    )
    .prop_map(|parts| parts.concat())
    .prop_filter("a post has visible text", |t| {
        t.chars().any(char::is_alphanumeric)
    })
}

/// One line of a JSONL post file: a good post, or one of the ways a line goes bad.
#[derive(Debug, Clone)]
enum JsonlLine {
    Good { id: u32, text: String },
    BadJson(String),
    NoText,
    TextNotString,
    InvalidUtf8,
}

fn jsonl_line() -> impl Strategy<Value = JsonlLine> {
    prop_oneof![
        4 => (any::<u32>(), post_text()).prop_map(|(id, text)| JsonlLine::Good { id, text }),
        1 => "\\{[a-z:\" ]{0,10}".prop_map(JsonlLine::BadJson),
        1 => Just(JsonlLine::NoText),
        1 => Just(JsonlLine::TextNotString),
        1 => Just(JsonlLine::InvalidUtf8),
    ]
}

fn render_jsonl(line: &JsonlLine) -> Vec<u8> {
    match line {
        JsonlLine::Good { id, text } => serde_json::json!({"id": id, "text": text})
            .to_string()
            .into_bytes(),
        JsonlLine::BadJson(s) => s.clone().into_bytes(),
        JsonlLine::NoText => b"{\"body\": \"x\"}".to_vec(),
        JsonlLine::TextNotString => b"{\"text\": [1, 2]}".to_vec(),
        JsonlLine::InvalidUtf8 => b"{\"text\": \"a\xff\xfe\"}".to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_read_as_posts_in_every_format_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512)
    ) {
        for format in [InputFormat::Auto, InputFormat::Lines, InputFormat::Jsonl] {
            let lines = read_all(std::io::Cursor::new(bytes.clone()), format).unwrap();
            // Every line of the input is accounted for, numbered from 1 in order.
            let numbers: Vec<usize> = lines.iter().map(|l| l.line).collect();
            prop_assert_eq!(numbers, (1..=lines.len()).collect::<Vec<_>>());
        }
        for format in [InputFormat::Csv, InputFormat::Tsv] {
            // A table may be refused as a whole (no `text` column), never with a panic.
            if let Ok(lines) = read_all(std::io::Cursor::new(bytes.clone()), format) {
                prop_assert!(lines.windows(2).all(|w| w[0].line < w[1].line));
            }
        }
    }

    #[test]
    fn jsonl_bad_lines_are_reported_by_number_and_good_ones_kept(
        lines in prop::collection::vec(jsonl_line(), 1..40),
        crlf in any::<bool>(),
    ) {
        let mut input = Vec::new();
        for line in &lines {
            input.extend(render_jsonl(line));
            input.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        let read = read_all(std::io::Cursor::new(input), InputFormat::Jsonl).unwrap();
        prop_assert_eq!(read.len(), lines.len());
        for (expected, got) in lines.iter().zip(&read) {
            match expected {
                JsonlLine::Good { id, text } => {
                    prop_assert_eq!(got.text.as_deref(), Ok(text.as_str()));
                    prop_assert_eq!(got.id.clone(), Some(serde_json::json!(id)));
                }
                _ => prop_assert!(got.text.is_err(), "line {} should be rejected: {:?}", got.line, got),
            }
        }
    }

    #[test]
    fn csv_and_tsv_round_trip_quoted_texts_with_true_line_numbers(
        texts in prop::collection::vec(post_text(), 1..30),
        tab in any::<bool>(),
        bom in any::<bool>(),
        crlf in any::<bool>(),
    ) {
        let mut writer = csv::WriterBuilder::new()
            .delimiter(if tab { b'\t' } else { b',' })
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        writer.write_record(["id", "text"]).unwrap();
        for (i, text) in texts.iter().enumerate() {
            writer.write_record([format!("p{i}"), text.clone()]).unwrap();
        }
        let mut input = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
        input.extend(writer.into_inner().unwrap());
        let format = if tab { InputFormat::Tsv } else { InputFormat::Csv };
        let read: Vec<InputLine> = read_all(std::io::Cursor::new(input), format).unwrap();
        prop_assert_eq!(read.len(), texts.len());
        let mut expected_line = 2; // the header is line 1
        for (i, (text, got)) in texts.iter().zip(&read).enumerate() {
            prop_assert_eq!(got.text.as_deref(), Ok(text.as_str()));
            prop_assert_eq!(got.id.clone(), Some(serde_json::json!(format!("p{i}"))));
            prop_assert_eq!(got.line, expected_line);
            expected_line += text.matches('\n').count() + 1;
        }
    }

    #[test]
    fn labelled_posts_keep_the_good_lines_and_name_every_bad_one(
        lines in prop::collection::vec(
            prop_oneof![
                3 => (post_text(), 1u64..10_000_000).prop_map(|(text, city)| {
                    (serde_json::json!({"text": text, "city_id": city}).to_string(), true)
                }),
                1 => (post_text(), -90.0f64..90.0, -180.0f64..180.0).prop_map(|(text, lat, lon)| {
                    (serde_json::json!({"text": text, "lat": lat, "lon": lon}).to_string(), true)
                }),
                1 => post_text().prop_map(|text| (serde_json::json!({"text": text}).to_string(), false)),
                1 => Just(("{\"text\": \"   \", \"city_id\": 1}".to_string(), false)),
                1 => "[a-z{}\":,]{1,12}".prop_map(|s| (s, false)),
            ],
            1..40,
        )
    ) {
        let mut input = String::new();
        for (line, _) in &lines {
            input.push_str(line);
            input.push('\n');
        }
        let read = parse_labelled_posts(std::io::Cursor::new(input.into_bytes())).unwrap();
        let good: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.1).map(|(i, _)| i + 1).collect();
        let bad: Vec<usize> = read.rejected.iter().map(|(n, _)| *n).collect();
        let expected_bad: Vec<usize> = (1..=lines.len()).filter(|n| !good.contains(n)).collect();
        // A random string may happen to be a valid record; it is never lost or double-counted.
        prop_assert_eq!(read.posts.len() + bad.len(), lines.len());
        prop_assert!(bad.iter().all(|n| expected_bad.contains(n)), "{:?} vs {:?}", bad, expected_bad);
        prop_assert!(read.posts.len() >= good.len());
    }

    #[test]
    fn city_records_name_every_bad_line_and_never_panic(
        n in 1usize..20,
        broken in prop::collection::btree_set(0usize..20, 0..4),
        garbage in prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..64),
    ) {
        let mut input = Vec::new();
        let mut expected_bad = Vec::new();
        for i in 0..n {
            if broken.contains(&i) {
                input.extend_from_slice(&garbage);
                input.extend_from_slice(b"x\n"); // never blank, never valid JSON
                expected_bad.push(i + 1);
            } else {
                let lat = (i as f64) - 9.5;
                input.extend(serde_json::json!({
                    "id": 1000 + i, "name": format!("City {i}"), "country": "Nowhere",
                    "lat": lat, "lon": lat * 2.0
                }).to_string().into_bytes());
                input.push(b'\n');
            }
        }
        match CityTable::parse_jsonl(std::io::Cursor::new(input), Path::new("cities.jsonl")) {
            Ok(table) => {
                prop_assert!(expected_bad.is_empty());
                prop_assert_eq!(table.len(), n);
            }
            Err(GeoError::BadRecords { lines, .. }) => {
                let got: Vec<usize> = lines.iter().map(|(n, _)| *n).collect();
                prop_assert_eq!(got, expected_bad);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}

#[test]
fn out_of_range_coordinates_in_a_city_record_are_named() {
    let input = b"{\"id\": 1, \"name\": \"A\", \"lat\": 10, \"lon\": 10}\n{\"id\": 2, \"name\": \"B\", \"lat\": 91, \"lon\": 0}\n";
    let err = CityTable::parse_jsonl(std::io::Cursor::new(input.to_vec()), Path::new("c.jsonl"))
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("out of range"), "{message}");
}

/// REST request bodies: any bytes or any JSON value give a parsed request or a problem (never a panic), and
/// in a batch every bad post gets its own problem while the good ones are kept.
mod rest_bodies {
    use contrastgeo::server::api::{parse_locate, ParsedLocate, RequestLimits};
    use contrastgeo::server::writes::{parse_body, AddCityRequest, AddExamplesRequest};
    use proptest::prelude::*;

    fn limits() -> RequestLimits {
        RequestLimits {
            batch_limit: 8,
            max_text_chars: 50,
            max_top_k: 10,
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z ]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("text".to_string()),
                        Just("posts".to_string()),
                        Just("top_k".to_string()),
                        Just("city".to_string()),
                        Just("examples".to_string()),
                        Just("lat".to_string()),
                        "[a-z]{1,5}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_body_is_parsed_or_refused_with_a_problem(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            value in json_value(),
        ) {
            let _ = parse_locate(&bytes, &limits());
            let _ = parse_body::<AddCityRequest>(&bytes);
            let text = value.to_string();
            for outcome in [
                parse_locate(text.as_bytes(), &limits()).err(),
                parse_body::<AddCityRequest>(text.as_bytes()).err(),
                parse_body::<AddExamplesRequest>(text.as_bytes()).err(),
            ]
            .into_iter()
            .flatten()
            {
                let problem = outcome.problem();
                prop_assert!(problem.status >= 400 && problem.status < 500, "{:?}", problem);
            }
        }

        #[test]
        fn a_batch_keeps_its_good_posts_and_gives_each_bad_one_its_problem(
            posts in prop::collection::vec(
                prop_oneof![
                    "[a-z]{1,20}".prop_map(|t| (serde_json::json!({"text": t}), true)),
                    Just((serde_json::json!({"text": "  "}), false)),
                    Just((serde_json::json!({"text": 5}), false)),
                    Just((serde_json::json!({"text": "ok", "top_k": 0}), false)),
                    Just((serde_json::json!({"txt": "x"}), false)),
                ],
                1..8,
            )
        ) {
            let body = serde_json::json!({"posts": posts.iter().map(|p| p.0.clone()).collect::<Vec<_>>()});
            match parse_locate(body.to_string().as_bytes(), &limits()) {
                Ok(ParsedLocate::Batch(parsed)) => {
                    prop_assert_eq!(parsed.len(), posts.len());
                    for (got, (_, good)) in parsed.iter().zip(&posts) {
                        prop_assert_eq!(got.is_ok(), *good, "{:?}", got);
                    }
                }
                other => prop_assert!(false, "a batch must parse as a batch: {:?}", other),
            }
        }
    }
}
