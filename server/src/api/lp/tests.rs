use proptest::prelude::*;

use super::*;

/// Parses a whole body, every line: the good ones (with their numbers) and every error.
fn parse(body: &str, precision: Precision) -> (Vec<(usize, Line)>, Vec<LineError>) {
    let mut lines = Vec::new();
    let (errors, _) = parse_each(body, precision, usize::MAX, false, |n, line| {
        lines.push((n, line))
    });
    (lines, errors)
}

fn one(line: &str) -> Line {
    let (lines, errors) = parse(line, Precision::Ns);
    assert!(errors.is_empty(), "{line}: {errors:?}");
    lines.into_iter().next().expect("a line").1
}

fn error(body: &str) -> LineError {
    let (_, errors) = parse(body, Precision::Ns);
    errors.into_iter().next().expect("an error")
}

#[test]
fn lines_parse_with_tags_fields_types_and_timestamps() {
    let l = one("cpu,host=a,region=eu usage=0.5,idle=3i,up=t,n=7u 1700000000123456789");
    assert_eq!(l.measurement, "cpu");
    assert_eq!(
        l.tags,
        BTreeMap::from([("host".into(), "a".into()), ("region".into(), "eu".into())])
    );
    assert_eq!(
        l.fields,
        vec![
            ("usage".into(), 0.5),
            ("idle".into(), 3.0),
            ("up".into(), 1.0),
            ("n".into(), 7.0)
        ]
    );
    assert_eq!(l.ts_ms, Some(1_700_000_000_123));
    assert_eq!(one("mem free=-1.5e3").ts_ms, None);
    assert_eq!(
        one("mem free=-1.5e3").fields,
        vec![("free".into(), -1500.0)]
    );
}

#[test]
fn escapes_keep_every_character() {
    let l = one(r"disk\ io,path=/var\,log,k\=x=v\ w read=1 5");
    assert_eq!(l.measurement, "disk io");
    assert_eq!(
        l.tags,
        BTreeMap::from([
            ("path".into(), "/var,log".into()),
            ("k=x".into(), "v w".into())
        ])
    );
    assert_eq!(l.ts_ms, Some(0));
}

#[test]
fn precisions_convert_to_ms_rounding_down() {
    for (p, t, ms) in [
        (Precision::Ns, "-1", -1),
        (Precision::Us, "1500", 1),
        (Precision::Ms, "42", 42),
        (Precision::S, "2", 2000),
    ] {
        let (lines, errors) = parse(&format!("m v=1 {t}"), p);
        assert!(errors.is_empty());
        assert_eq!(lines[0].1.ts_ms, Some(ms), "{p:?} {t}");
    }
}

#[test]
fn blank_lines_and_comments_are_skipped_and_line_numbers_kept() {
    let (lines, errors) = parse("# header\n\nm v=1 1\r\n  \nm v= 2\n", Precision::Ms);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].0, 3);
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].column), (5, 5));
}

#[test]
fn bad_lines_name_line_column_and_problem() {
    for (body, column, needle) in [
        ("cpu", 4, "a space before the fields"),
        ("cpu,host usage=1", 9, "'=' after the tag key"),
        ("cpu usage=\"busy\"", 11, "string fields are not supported"),
        ("cpu usage=\"busy", 11, "unterminated"),
        ("cpu usage=abc", 11, "not a field value"),
        ("cpu usage=1 12x", 13, "integer timestamp"),
        ("cpu usage=9007199254740993i", 11, "2^53"),
        ("cpu usage=-1u", 11, "unsigned"),
        ("cpu usage=1,usage=2", 13, "appears twice"),
        ("cpu,a=1,a=2 v=1", 9, "appears twice"),
        (",a=1 v=1", 1, "a measurement"),
        ("cpu v=1e999", 7, "float range"),
    ] {
        let e = error(body);
        assert_eq!(e.line, 1, "{body}");
        assert!(e.message.contains(needle), "{body}: {}", e.message);
        assert_eq!(e.column, column, "{body}: {}", e.message);
    }
}

/// A point a case expects: its line, measurement, tags, fields and timestamp (ms).
struct P {
    line: usize,
    m: &'static str,
    tags: &'static [(&'static str, &'static str)],
    fields: &'static [(&'static str, f64)],
    ts: Option<i64>,
}

/// The point of a one-line body.
const fn p(
    m: &'static str,
    tags: &'static [(&'static str, &'static str)],
    fields: &'static [(&'static str, f64)],
    ts: Option<i64>,
) -> Want {
    Want::One(P {
        line: 1,
        m,
        tags,
        fields,
        ts,
    })
}

enum Want {
    /// Every line accepted, giving these points.
    Points(&'static [P]),
    /// One accepted point (built by [`p`]).
    One(P),
    /// Refused: the first error's line and column.
    Refused(usize, usize),
    /// Accepted by InfluxData as a string field, refused here on purpose (a series holds
    /// numbers): the error's column on line 1.
    StringField(usize),
}

/// InfluxData's own cases for whitespace, escapes and invalid characters, re-expressed with
/// the outcome this parser must give. Sources: `corpus/<implementation>` is a case of
/// `influxdata/line-protocol-corpus` (`corpus.json`, by its `implementation` field; the Go
/// decoder `github.com/influxdata/line-protocol/v2/lineprotocol` passes all of them);
/// `decoder_test/<name>` a case of that package's `decoder_test.go`; `decoder` a rule of its
/// `decoder.go`, and `ebnf` one of its `line-protocol.ebnf`, that no corpus case covers. Columns are ours (characters, pointing at
/// the offending character); InfluxData counts bytes and sometimes points at the token's start.
#[test]
fn influxdata_cases_for_whitespace_escapes_and_invalid_characters() {
    const NS: Option<i64> = Some(1_257_894_000_000);
    let cases: &[(&str, &str, Want)] = &[
        // --- Whitespace: spaces only, one or more, leading and trailing allowed.
        // Reported defect: trailing spaces after the timestamp were refused.
        (
            "corpus/influxdbv2models",
            "cpu value=1.0 1257894000000000000   ",
            p("cpu", &[], &[("value", 1.0)], NS),
        ),
        // Reported defect: repeated spaces between sections were refused.
        (
            "corpus/influxdbv2models",
            "cpu      value=1.0     1257894000000000000",
            p("cpu", &[], &[("value", 1.0)], NS),
        ),
        (
            "corpus/influxdbv2models",
            "cpu    value=1.0 1257894000000000000",
            p("cpu", &[], &[("value", 1.0)], NS),
        ),
        (
            "corpus/influxdbv2models",
            "cpu   value=1.0 1257894000000000000\n",
            p("cpu", &[], &[("value", 1.0)], NS),
        ),
        (
            "corpus/influxdbv2models",
            "cpu value=1.0     1257894000000000000",
            p("cpu", &[], &[("value", 1.0)], NS),
        ),
        (
            "decoder_test/field-with-space-and-no-timestamp",
            "9 f=-7 ",
            p("9", &[], &[("f", -7.0)], None),
        ),
        // decoder_test/all-fields-present-no-escapes, without its string field: a blank
        // line, an indented comment, leading spaces, two spaces between sections.
        (
            "decoder_test/all-fields-present-no-escapes",
            "\n   # comment\n somename,tag1=val1,tag2=val2  floatfield=1,intfield=-1i,\
             uintfield=1u,boolfield=true  1602841605822791506\n",
            Want::Points(&[P {
                line: 3,
                m: "somename",
                tags: &[("tag1", "val1"), ("tag2", "val2")],
                fields: &[
                    ("floatfield", 1.0),
                    ("intfield", -1.0),
                    ("uintfield", 1.0),
                    ("boolfield", 1.0),
                ],
                ts: Some(1_602_841_605_822),
            }]),
        ),
        (
            "decoder_test/carriage-returns",
            "# foo\r\nm x=1\r\n\r\n",
            Want::Points(&[P {
                line: 2,
                m: "m",
                tags: &[],
                fields: &[("x", 1.0)],
                ts: None,
            }]),
        ),
        // ebnf: `lines = line { [ "\r" ] "\n" line } [ "\r" ]`: a final lone \r ends the body.
        ("ebnf", "m v=1\r", p("m", &[], &[("v", 1.0)], None)),
        // Reported defect: a leading tab was accepted; a tab is no whitespace.
        ("corpus/custom", "\tm v=1", Want::Refused(1, 1)),
        // ebnf: `whitespace = space_char { space_char }`, so no tab between sections either.
        ("ebnf", "m\tv=1", Want::Refused(1, 2)),
        ("ebnf", "m v=1\t1", Want::Refused(1, 5)),
        // ebnf: a \r only before \n (or at the very end).
        ("ebnf", "m v=1\r 2", Want::Refused(1, 6)),
        (
            "decoder_test/carriage-return-in-comment",
            "# foo\rxxx\nm x=1\r\n\r\n",
            Want::Refused(1, 6),
        ),
        // A comma after the measurement must start a tag, not a space.
        (
            "corpus/influxdbv2models",
            "cpu, value=1",
            Want::Refused(1, 5),
        ),
        ("corpus/influxdbv2models", "m, x=1", Want::Refused(1, 3)),
        ("corpus/influxdbv2models", "cpu,", Want::Refused(1, 5)),
        ("corpus/influxdbv2models", "cpu", Want::Refused(1, 4)),
        ("corpus/influxdbv2models", "cpu v= ", Want::Refused(1, 7)),
        // --- Escapes: a backslash escapes its section's specials only; `\\` is two.
        (
            "corpus/lineprotocol",
            r"c\ pu value=42",
            p("c pu", &[], &[("value", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"c\,pu value=42",
            p("c,pu", &[], &[("value", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"cpu va\ lue=42",
            p("cpu", &[], &[("va lue", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"cpu va\,lue=42",
            p("cpu", &[], &[("va,lue", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"cpu va\=lue=42",
            p("cpu", &[], &[("va=lue", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"cpu va\lue=42",
            p("cpu", &[], &[(r"va\lue", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"cpu,ho\,st=localhost value=42",
            p("cpu", &[("ho,st", "localhost")], &[("value", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"cpu,ho\=st=localhost value=42",
            p("cpu", &[("ho=st", "localhost")], &[("value", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"cpu,ho\st=localhost value=42",
            p("cpu", &[(r"ho\st", "localhost")], &[("value", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"cpu,host=two\ words value=42",
            p("cpu", &[("host", "two words")], &[("value", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"cpu,host=two\\ words value=42",
            p("cpu", &[("host", r"two\ words")], &[("value", 42.0)], None),
        ),
        (
            "corpus/lineprotocol",
            r"cpu,host=two\\\ words value=42",
            p("cpu", &[("host", r"two\\ words")], &[("value", 42.0)], None),
        ),
        (
            "corpus/influxdbv2models",
            r"cpu,reg\\=ion=east value=1.0",
            p("cpu", &[(r"reg\=ion", "east")], &[("value", 1.0)], None),
        ),
        (
            "corpus/influxdbv2models",
            r"cpu,regions=\\ east value=1.0",
            p("cpu", &[("regions", r"\ east")], &[("value", 1.0)], None),
        ),
        (
            "corpus/influxdbv2models",
            r"cpu,regions=\\,\,\=east value=1.0",
            p("cpu", &[("regions", r"\,,=east")], &[("value", 1.0)], None),
        ),
        (
            "corpus/influxdbv2models",
            r"cpu,regions=eas\\ t value=1.0",
            p("cpu", &[("regions", r"eas\ t")], &[("value", 1.0)], None),
        ),
        (
            "corpus/influxdbv2models",
            r"cpu,regions=east\\  value=1.0",
            p("cpu", &[("regions", r"east\ ")], &[("value", 1.0)], None),
        ),
        (
            "corpus/influxdbv2models",
            r"cpu,regions=eas\t value=1.0",
            p("cpu", &[("regions", r"eas\t")], &[("value", 1.0)], None),
        ),
        (
            "decoder_test/backslash-escapes-in-tags",
            r"m,s=\t\r\n\v x=1",
            p("m", &[("s", r"\t\r\n\v")], &[("x", 1.0)], None),
        ),
        (
            "corpus/influxdbv2models",
            r"cpu=load,equals\=foo=tag\=value value=1i",
            p(
                "cpu=load",
                &[("equals=foo", "tag=value")],
                &[("value", 1.0)],
                None,
            ),
        ),
        (
            "corpus/influxdbv2models",
            r"m,\ e\ \=o=world,server=a x=1",
            p(
                "m",
                &[(" e =o", "world"), ("server", "a")],
                &[("x", 1.0)],
                None,
            ),
        ),
        (
            "corpus/influxdbv2models",
            r#"cpu,tag0=1\"\",t=k value=1"#,
            p(
                "cpu",
                &[("t", "k"), ("tag0", r#"1\"\""#)],
                &[("value", 1.0)],
                None,
            ),
        ),
        (
            "corpus/influxdbv2models",
            r"cpu \a=1i",
            p("cpu", &[], &[(r"\a", 1.0)], None),
        ),
        // An unescaped '=' in a tag value is an error.
        (
            "corpus/influxdbv2models",
            "cpu,host=f=o,",
            Want::Refused(1, 11),
        ),
        (
            "corpus/influxdbv2models",
            r"cpu,host=f\==o,",
            Want::Refused(1, 13),
        ),
        (
            "corpus/influxdbv2models",
            r"cpu,host=serverA\,,=us-east value=1i",
            Want::Refused(1, 20),
        ),
        ("corpus/influxdbv2models", r"a v=1 0\", Want::Refused(1, 7)),
        // In strings, `\"` does not end the string and `\\` is one backslash.
        (
            "corpus/influxdbv2models",
            r#"cpu value="test\"" 1000000000"#,
            Want::StringField(11),
        ),
        (
            "corpus/influxdbv2models",
            r#"cpu value="test\\" 1000000000"#,
            Want::StringField(11),
        ),
        (
            "corpus/influxdbv2models",
            r#"cpu,host=serverA,region=us-east value="{Hello\"{,}\" World}" 1000000000"#,
            Want::StringField(39),
        ),
        // --- Invalid characters: ASCII control characters outside strings.
        // Reported defect: control characters in tag keys and values were accepted.
        ("corpus/custom", "m,k=x\u{1}y v=1", Want::Refused(1, 6)),
        ("corpus/custom", "m,x\u{1}y=v v=1", Want::Refused(1, 4)),
        ("corpus/custom", "m x\u{1}y=1", Want::Refused(1, 4)),
        ("corpus/custom", "x\u{1}y v=1", Want::Refused(1, 2)),
        ("corpus/custom", "m v=\"x\u{1}y\"", Want::StringField(5)),
        // U+00A0 is no control character: the measurement is "m\u{a0}v=1", with no fields.
        ("corpus/custom", "m\u{a0}v=1", Want::Refused(1, 6)),
        (
            "decoder_test/field-key-error-after-newline-in-string",
            "m f=1,\u{1}=1,\u{1}=2",
            Want::Refused(1, 7),
        ),
        (
            "decoder_test/non-printable-ASCII-in-tag-key",
            "m,foo\u{3}=bar x=1",
            Want::Refused(1, 6),
        ),
        (
            "decoder_test/non-printable-ASCII-in-tag-value",
            "m,foo=bar\u{2} x=1",
            Want::Refused(1, 10),
        ),
        // ebnf: `nonprintable_char = "\u0000"…"\u001f" | "\u007f"`.
        ("ebnf", "m,t=a\u{7f}b v=1", Want::Refused(1, 6)),
        ("ebnf", "m\u{0} v=1", Want::Refused(1, 2)),
        ("ebnf", "m v=1\u{1}", Want::Refused(1, 5)),
        // The decoder refuses control characters in comments, tab included (its grammar file
        // would allow a tab; the decoder, which made the corpus, does not).
        ("decoder", "# a\tb\nm v=1", Want::Refused(1, 4)),
        // ebnf: numbers and timestamps may start with '-', never '+'.
        ("ebnf", "m v=+1", Want::Refused(1, 5)),
        ("ebnf", "m v=+1i", Want::Refused(1, 5)),
        ("ebnf", "m v=1 +5", Want::Refused(1, 7)),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter(|(_, body, want)| !outcome_is(body, want))
        .map(|(from, body, _)| {
            let (lines, errors) = parse(body, Precision::Ns);
            format!("{from}: {body:?} gave {lines:?} {errors:?}")
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Whether parsing `body` gives what `want` says.
fn outcome_is(body: &str, want: &Want) -> bool {
    let (lines, errors) = parse(body, Precision::Ns);
    let points: &[P] = match want {
        Want::Points(points) => points,
        Want::One(point) => std::slice::from_ref(point),
        Want::Refused(line, column) => {
            return errors
                .first()
                .is_some_and(|e| (e.line, e.column) == (*line, *column));
        }
        Want::StringField(column) => {
            return errors.len() == 1
                && (errors[0].line, errors[0].column) == (1, *column)
                && errors[0].message.contains("string fields");
        }
    };
    errors.is_empty()
        && lines.len() == points.len()
        && lines.iter().zip(points).all(|((number, line), want)| {
            let tags: BTreeMap<String, String> = want
                .tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let fields: Vec<(String, f64)> = want
                .fields
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            *number == want.line
                && line.measurement == want.m
                && line.tags == tags
                && line.fields == fields
                && line.ts_ms == want.ts
        })
}

#[test]
fn strings_may_span_lines_and_later_lines_keep_their_numbers() {
    // As InfluxData's decoder: a string value may hold newlines, so the point goes on; the
    // next point's line is counted from the body's start.
    let (lines, errors) = parse("m s=\"a\nb\"\nm v=1\nm v=x\n", Precision::Ns);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].0, 3);
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(at, vec![(1, 5), (4, 5)], "{errors:?}");
    // An unterminated string runs to the end of the body: one error, not one per line.
    let (lines, errors) = parse("m s=\"a\nm v=1\nm v=2", Precision::Ns);
    assert!(lines.is_empty());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("unterminated"));
}

#[test]
fn long_lines_and_many_fields_parse() {
    let name = "m".repeat(1 << 18);
    let fields: Vec<String> = (0..20_000).map(|i| format!("f{i}={i}i")).collect();
    let body = format!("{name},t=v {} 1\n", fields.join(","));
    let (lines, errors) = parse(&body, Precision::Ms);
    assert!(errors.is_empty());
    assert_eq!(lines[0].1.measurement.len(), 1 << 18);
    assert_eq!(lines[0].1.fields.len(), 20_000);
    assert_eq!(lines[0].1.fields[19_999], ("f19999".into(), 19_999.0));
    // A huge number is refused with a message, not a panic.
    let (lines, errors) = parse(
        &format!("m v={}i\nm v={}", "9".repeat(100_000), "9".repeat(400)),
        Precision::Ns,
    );
    assert!(lines.is_empty());
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].message.contains("2^53"));
    assert!(errors[1].message.contains("float range"));
}

/// Checks what `parse` promises on any text: accepted points hold finite values and names
/// that are non-empty and free of ASCII control characters; every line is reported at most
/// once, in order; every error points into the body.
fn assert_sound(text: &str) -> Result<(), TestCaseError> {
    let (lines, errors) = parse(text, Precision::Ns);
    let physical: Vec<usize> = text.split('\n').map(|l| l.chars().count()).collect();
    let clean = |name: &str| !name.is_empty() && !name.chars().any(|c| c.is_ascii_control());
    for (_, line) in &lines {
        prop_assert!(clean(&line.measurement), "{line:?}");
        prop_assert!(!line.fields.is_empty());
        for (k, v) in &line.tags {
            prop_assert!(clean(k) && clean(v), "{line:?}");
        }
        for (k, v) in &line.fields {
            prop_assert!(clean(k) && v.is_finite(), "{line:?}");
        }
    }
    for e in &errors {
        prop_assert!(e.line >= 1 && e.line <= physical.len(), "{e:?}");
        prop_assert!(
            e.column >= 1 && e.column <= physical[e.line - 1] + 1,
            "{e:?}"
        );
    }
    let mut numbers: Vec<usize> = lines.iter().map(|(n, _)| *n).collect();
    numbers.extend(errors.iter().map(|e| e.line));
    numbers.sort_unstable();
    prop_assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    Ok(())
}

/// Characters that stress the syntax, weighted toward the ones it gives a meaning.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(vec![
            ' ', ',', '=', '\\', '"', '\n', '\r', '\t', '#', '-', '+', '.', 'e', 'i', 'u', 't',
            'f', '0', '1', '9',
        ]),
        1 => (0u8..0x20).prop_map(char::from),
        1 => prop::sample::select(vec!['\u{7f}', 'é', '\u{85}', '\u{a0}', '\u{feff}', '🚀']),
        2 => prop::char::range('a', 'z'),
    ]
}

/// A field value's text, valid or not: floats (also NaN and infinities), integers of every
/// width, huge digit runs, booleans, near-misses.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|v| format!("{v}")),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        any::<i64>().prop_map(|v| format!("{v}i")),
        any::<u64>().prop_map(|v| format!("{v}u")),
        (1usize..600).prop_map(|n| "9".repeat(n)),
        (1usize..600).prop_map(|n| format!("-{}i", "9".repeat(n))),
        prop::sample::select(vec![
            "1e309",
            "-0",
            ".5",
            "5.",
            "--1",
            "1.0i",
            "0x1p4",
            "inf",
            "NaN",
            "t",
            "FALSE",
            "1_0",
            "\"s\"",
            "\"a\\\"b\"",
            "-",
            ".",
            "1e",
            "\\",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A name of hostile characters, maybe empty.
fn hostile_name() -> impl Strategy<Value = String> {
    prop::collection::vec(hostile_char(), 0..12).prop_map(String::from_iter)
}

/// Lines of plausible shape (names of hostile characters, many fields, hostile values and
/// separators) to get past the first token.
fn shaped_body() -> impl Strategy<Value = String> {
    let sep = prop::sample::select(vec![" ", "  ", "\t", "", ",", " \r", "\r\n"]);
    let field = (hostile_name(), value_text()).prop_map(|(k, v)| format!("{k}={v}"));
    let line = (
        hostile_name(),
        prop::collection::vec((hostile_name(), hostile_name()), 0..4),
        sep.clone(),
        prop::collection::vec(field, 0..40),
        sep,
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(m, tags, sep, fields, sep2, ts)| {
            let mut line = m;
            for (k, v) in tags {
                line.push_str(&format!(",{k}={v}"));
            }
            line.push_str(sep);
            line.push_str(&fields.join(","));
            if let Some(ts) = ts {
                line.push_str(&format!("{sep2}{ts}"));
            }
            line
        });
    prop::collection::vec(line, 1..4).prop_map(|lines| lines.join("\n"))
}

/// A name of any non-control characters, specials included, that line protocol can carry:
/// not ending in a backslash (it would escape the separator after it).
fn carried_name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::char::range('a', 'z'),
            2 => prop::sample::select(vec![' ', ',', '=', '\\', '"', '#', '\'', 'é', '🚀', '\u{a0}']),
        ],
        1..10,
    )
    .prop_map(String::from_iter)
    .prop_filter("ends in a backslash", |s| !s.ends_with('\\'))
}

/// Writes `name` with a backslash before each of `specials`.
fn escape(name: &str, specials: &[char]) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if specials.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone)]
enum Value {
    Float(f64),
    Int(i64),
    Uint(u64),
    Bool(bool),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Float(v) => format!("{v:?}"),
            Value::Int(v) => format!("{v}i"),
            Value::Uint(v) => format!("{v}u"),
            Value::Bool(v) => v.to_string(),
        }
    }

    fn number(&self) -> f64 {
        match self {
            Value::Float(v) => *v,
            Value::Int(v) => *v as f64,
            Value::Uint(v) => *v as f64,
            Value::Bool(v) => f64::from(u8::from(*v)),
        }
    }
}

fn value() -> impl Strategy<Value = Value> {
    const MAX: i64 = 1 << 53;
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(Value::Float),
        (-MAX..=MAX).prop_map(Value::Int),
        (0..=MAX as u64).prop_map(Value::Uint),
        any::<bool>().prop_map(Value::Bool),
    ]
}

/// A valid point, and how its line is spaced.
#[derive(Debug, Clone)]
struct Written {
    measurement: String,
    tags: BTreeMap<String, String>,
    fields: Vec<(String, Value)>,
    ts: Option<i64>,
    /// Spaces before, between the three sections, after; then `\r\n` or `\n`; then whether
    /// a comment line and a blank line follow.
    spacing: (usize, usize, usize, usize, bool, bool),
}

fn written() -> impl Strategy<Value = Written> {
    (
        carried_name().prop_filter("a comment", |m| !m.starts_with('#')),
        prop::collection::btree_map(carried_name(), carried_name(), 0..4),
        prop::collection::btree_map(carried_name(), value(), 1..6),
        prop::option::of(any::<i64>()),
        (
            0..3usize,
            1..4usize,
            1..4usize,
            0..3usize,
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(|(measurement, tags, fields, ts, spacing)| Written {
            measurement,
            tags,
            fields: fields.into_iter().collect(),
            ts,
            spacing,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_text_is_answered_soundly(
        chars in prop::collection::vec(hostile_char(), 0..400)
    ) {
        assert_sound(&String::from_iter(chars))?;
    }

    #[test]
    fn random_bytes_are_answered_soundly(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        assert_sound(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn shaped_lines_with_hostile_parts_are_answered_soundly(body in shaped_body()) {
        assert_sound(&body)?;
    }

    #[test]
    fn written_points_read_back_exactly(points in prop::collection::vec(written(), 1..6)) {
        let mut body = String::new();
        let mut expected = Vec::new();
        let mut line = 1;
        for w in &points {
            let (lead, gap1, gap2, trail, crlf, extra) = w.spacing;
            body.push_str(&" ".repeat(lead));
            body.push_str(&escape(&w.measurement, &[',', ' ']));
            for (k, v) in &w.tags {
                body.push(',');
                body.push_str(&escape(k, &[',', '=', ' ']));
                body.push('=');
                body.push_str(&escape(v, &[',', '=', ' ']));
            }
            body.push_str(&" ".repeat(gap1));
            let fields: Vec<String> = w
                .fields
                .iter()
                .map(|(k, v)| format!("{}={}", escape(k, &[',', '=', ' ']), v.text()))
                .collect();
            body.push_str(&fields.join(","));
            if let Some(ts) = w.ts {
                body.push_str(&" ".repeat(gap2));
                body.push_str(&ts.to_string());
            }
            body.push_str(&" ".repeat(trail));
            body.push_str(if crlf { "\r\n" } else { "\n" });
            expected.push((line, w));
            line += 1;
            if extra {
                body.push_str("  # a comment, with = and \\ and \"\n\n");
                line += 2;
            }
        }
        let (lines, errors) = parse(&body, Precision::Ns);
        prop_assert!(errors.is_empty(), "{body:?}: {errors:?}");
        prop_assert_eq!(lines.len(), expected.len());
        for ((number, got), (line, w)) in lines.iter().zip(&expected) {
            prop_assert_eq!(*number, *line);
            prop_assert_eq!(&got.measurement, &w.measurement);
            prop_assert_eq!(&got.tags, &w.tags);
            let fields: Vec<(String, f64)> =
                w.fields.iter().map(|(k, v)| (k.clone(), v.number())).collect();
            prop_assert_eq!(&got.fields, &fields);
            prop_assert_eq!(got.ts_ms, w.ts.map(|t| t.div_euclid(1_000_000)));
        }
    }
}
