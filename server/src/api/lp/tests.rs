use super::*;

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
