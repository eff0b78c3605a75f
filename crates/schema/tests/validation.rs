//! Table-driven acceptance and rejection of every field type and timestamp form of the
//! contract, through the public decoder.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType};
use chrono::Utc;
use meterbase_schema::{
    DecodeLimits, DecodeOutcome, EventDecoder, EventTypeDef, EventTypeSpec, InputFormat,
};
use proptest::prelude::*;

fn decoder(field_type: &str) -> EventDecoder {
    let spec: EventTypeSpec = serde_json::from_value(serde_json::json!({
        "name": "t", "dataschema": {"data": {"v": field_type}}
    }))
    .unwrap();
    EventDecoder::new(&EventTypeDef::from_spec(spec, "id".into(), Utc::now()).unwrap()).unwrap()
}

fn limits() -> DecodeLimits {
    DecodeLimits {
        now: 1_750_000_000_000_000,
        ..DecodeLimits::default()
    }
}

fn decode_value(field_type: &str, value_json: &str) -> DecodeOutcome {
    let body = format!(
        r#"{{"customer_id":"c","timestamp":"2025-01-01T00:00:00Z","data":{{"v":{value_json}}}}}"#
    );
    decoder(field_type).decode(body.as_bytes(), InputFormat::Json, limits())
}

#[test]
fn accepted_and_rejected_values_per_type() {
    let accepted: &[(&str, &[&str])] = &[
        ("String", &[r#""abc""#, r#""""#, r#""é \u00e9 \n""#]),
        (
            "UUID",
            &[
                r#""123e4567-e89b-12d3-a456-426614174000""#,
                r#""123E4567-E89B-12D3-A456-426614174000""#,
            ],
        ),
        ("Int8", &["127", "-128", r#""5""#, "5.0"]),
        ("Int16", &["32767", "-32768"]),
        ("Int32", &["2147483647"]),
        (
            "Int64",
            &["9223372036854775807", "-9223372036854775808", r#""-12""#],
        ),
        ("UInt8", &["255", "0"]),
        ("UInt16", &["65535"]),
        ("UInt32", &["4294967295"]),
        ("UInt64", &["18446744073709551615"]),
        ("Float32", &["1.5", r#""2.5""#, "-3e10"]),
        ("Float64", &["10.5", r#""10.5""#, "1e308", "0", "-0.0001"]),
        (
            "Decimal(10,2)",
            &["10.5", r#""12345678.99""#, "-0.01", "1e2"],
        ),
        ("Decimal(38,0)", &["99999999999999999999999999999999999999"]),
        ("Bool", &["true", "false", r#""true""#, r#""false""#]),
        ("Boolean", &["true"]),
        ("Date", &[r#""2024-02-29""#]),
        ("Date32", &[r#""2025-12-31""#]),
        ("DateTime", &[r#""2025-01-01 00:00:00""#, "1735689600"]),
        (
            "DateTime64",
            &[
                r#""2025-01-01T00:00:00.123456789Z""#,
                "1735689600.5",
                r#""2025-01-01T01:00:00+01:00""#,
            ],
        ),
        ("DateTime64(6)", &[r#""2025-01-01T00:00:00Z""#]),
        ("LowCardinality(String)", &[r#""us-east-1""#]),
        ("Nullable(Int64)", &["null", "5"]),
        ("Nullable(String)", &["null", r#""x""#]),
        ("LowCardinality(Nullable(String))", &["null"]),
    ];
    for (ty, values) in accepted {
        for v in *values {
            match decode_value(ty, v) {
                DecodeOutcome::Valid(b) => assert_eq!(b.num_rows(), 1),
                other => panic!("{ty} should accept {v}: {other:?}"),
            }
        }
    }
    let rejected: &[(&str, &[&str])] = &[
        ("String", &["5", "true", "null", "{}", "[]"]),
        (
            "UUID",
            &[r#""not-a-uuid""#, r#""123e4567e89b12d3a456426614174000""#],
        ),
        ("Int8", &["128", "-129", "5.5", r#""abc""#, "true", "null"]),
        ("Int64", &["9223372036854775808", "1e400"]),
        ("UInt8", &["-1", "256"]),
        ("UInt64", &["18446744073709551616", "-1"]),
        ("Float32", &["1e39", r#""NaN""#]),
        (
            "Float64",
            &[
                "1e400",
                "-1e400",
                r#""NaN""#,
                r#""Infinity""#,
                r#""inf""#,
                r#""abc""#,
                "true",
                "[]",
            ],
        ),
        (
            "Decimal(10,2)",
            &["10.555", "123456789", r#""1.2.3""#, r#""NaN""#],
        ),
        ("Bool", &["1", r#""yes""#, r#""TRUE""#]),
        (
            "Date",
            &[r#""2023-02-29""#, r#""2025-01-01T00:00:00Z""#, "20250101"],
        ),
        (
            "DateTime64",
            &[
                r#""yesterday""#,
                r#""2025-01-01T00:00:00+25:00""#,
                "-5",
                "true",
            ],
        ),
        ("LowCardinality(String)", &["null"]),
    ];
    for (ty, values) in rejected {
        for v in *values {
            match decode_value(ty, v) {
                DecodeOutcome::Invalid { errors, .. } => {
                    assert_eq!(errors[0].pointer, "/data/v", "{ty} {v}");
                    assert_eq!(errors[0].index, Some(0));
                }
                other => panic!("{ty} should reject {v}: {other:?}"),
            }
        }
    }
}

#[test]
fn exact_values_are_kept() {
    let DecodeOutcome::Valid(b) = decode_value(
        "Decimal(38,12)",
        r#""12345678901234567890123456.789012345678""#,
    ) else {
        panic!()
    };
    let col = b.column(2).as_primitive::<Decimal128Type>();
    assert_eq!(
        col.value(0),
        12_345_678_901_234_567_890_123_456_789_012_345_678_i128
    );
    let DecodeOutcome::Valid(b) = decode_value("Int64", "9223372036854775807") else {
        panic!()
    };
    assert_eq!(b.column(2).as_primitive::<Int64Type>().value(0), i64::MAX);
    let DecodeOutcome::Valid(b) = decode_value("Float64", r#""10.5""#) else {
        panic!()
    };
    assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 10.5);
    let DecodeOutcome::Valid(b) = decode_value("Nullable(Int64)", "null") else {
        panic!()
    };
    assert!(b.column(2).is_null(0));
}

#[test]
fn timestamp_forms_of_the_contract() {
    let dec = decoder("Float64");
    let base: i64 = 1_735_689_600_000_000; // 2025-01-01T00:00:00Z
    for (ts, want) in [
        (r#""2025-01-01T00:00:00Z""#, base),
        (r#""2025-01-01T02:00:00+02:00""#, base),
        (r#""2025-01-01 00:00:00""#, base),
        (r#""2025-01-01T00:00:00""#, base),
        (r#""2025-01-01 00:00:00.731""#, base + 731_000),
        (r#""2025-01-01T00:00:00.000001999Z""#, base + 1),
        ("1735689600", base),
        ("1735689600.25", base + 250_000),
    ] {
        let body = format!(r#"{{"customer_id":"c","timestamp":{ts},"data":{{"v":1}}}}"#);
        let DecodeOutcome::Valid(b) = dec.decode(body.as_bytes(), InputFormat::Json, limits())
        else {
            panic!("{ts} rejected")
        };
        assert_eq!(
            b.column(1)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            want,
            "{ts}"
        );
    }
    for ts in [
        r#""2025-01-01""#,
        r#""01/01/2025""#,
        "null",
        r#""2030-01-01T00:00:00Z""#,
        r#""1735689600""#,
    ] {
        let body = format!(r#"{{"customer_id":"c","timestamp":{ts},"data":{{"v":1}}}}"#);
        match dec.decode(body.as_bytes(), InputFormat::Json, limits()) {
            DecodeOutcome::Invalid { errors, .. } => {
                assert_eq!(errors[0].pointer, "/timestamp", "{ts}")
            }
            other => panic!("{ts} accepted: {other:?}"),
        }
    }
}

#[test]
fn event_level_rules() {
    let dec = decoder("Float64");
    let cases: &[(&str, &str)] = &[
        (
            r#"{"customer_id":"","timestamp":1735689600,"data":{"v":1}}"#,
            "/customer_id",
        ),
        (
            r#"{"customer_id":5,"timestamp":1735689600,"data":{"v":1}}"#,
            "/customer_id",
        ),
        (r#"{"timestamp":1735689600,"data":{"v":1}}"#, "/customer_id"),
        (r#"{"customer_id":"c","data":{"v":1}}"#, "/timestamp"),
        (
            r#"{"customer_id":"c","timestamp":1735689600,"data":{}}"#,
            "/data/v",
        ),
        (
            r#"{"customer_id":"c","timestamp":1735689600,"data":{"v":1,"w":2}}"#,
            "/data/w",
        ),
        (
            r#"{"customer_id":"c","timestamp":1735689600,"data":{"v":1,"v":2}}"#,
            "/data/v",
        ),
        (
            r#"{"customer_id":"c","customer_id":"d","timestamp":1735689600,"data":{"v":1}}"#,
            "/customer_id",
        ),
        (
            r#"{"customer_id":"c","timestamp":1735689600,"data":{"v":1},"extra":1}"#,
            "/extra",
        ),
        (
            r#"{"customer_id":"c","timestamp":1735689600,"data":[1]}"#,
            "/data",
        ),
    ];
    for (body, pointer) in cases {
        match dec.decode(body.as_bytes(), InputFormat::Json, limits()) {
            DecodeOutcome::Invalid { errors, .. } => {
                assert_eq!(&errors[0].pointer, pointer, "{body}")
            }
            other => panic!("{body} accepted: {other:?}"),
        }
    }
    let long = "x".repeat(257);
    let body = format!(r#"{{"customer_id":"{long}","timestamp":1735689600,"data":{{"v":1}}}}"#);
    assert!(matches!(
        dec.decode(body.as_bytes(), InputFormat::Json, limits()),
        DecodeOutcome::Invalid { .. }
    ));
    assert!(matches!(
        dec.decode(b"\xff\xfe", InputFormat::Json, limits()),
        DecodeOutcome::Invalid { .. }
    ));
    let deep = format!(
        r#"{{"customer_id":"c","timestamp":1,"data":{{"v":{}1{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(matches!(
        dec.decode(deep.as_bytes(), InputFormat::Json, limits()),
        DecodeOutcome::Invalid { .. }
    ));
}

#[test]
fn all_or_nothing_lists_every_bad_event() {
    let dec = decoder("Float64");
    let body = br#"[{"customer_id":"a","timestamp":1735689600,"data":{"v":1}},
                    {"customer_id":"b","timestamp":1735689600,"data":{"v":"x"}},
                    {"customer_id":"c","timestamp":1735689600,"data":{"v":2}},
                    {"customer_id":"d","timestamp":"bad","data":{"v":3}}]"#;
    let DecodeOutcome::Invalid {
        errors,
        invalid_events,
        events,
    } = dec.decode(body, InputFormat::Json, limits())
    else {
        panic!()
    };
    assert_eq!((invalid_events, events), (2, 4));
    assert_eq!(
        errors.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![Some(1), Some(3)]
    );
    assert_eq!(
        errors[0].message,
        r#"expected Float64, got "x": not a number"#
    );

    let nd = b"{\"customer_id\":\"a\",\"timestamp\":1735689600,\"data\":{\"v\":1}}\r\n\n{\"customer_id\":\"a\",\"timestamp\":1735689600,\"data\":{\"v\":true}}\n{not json}\n";
    let DecodeOutcome::Invalid { errors, .. } = dec.decode(nd, InputFormat::Ndjson, limits())
    else {
        panic!()
    };
    assert_eq!(
        errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![Some(3), Some(4)]
    );

    let many = format!(
        "[{}]",
        [r#"{"customer_id":"a","timestamp":1735689600,"data":{"v":1}}"#; 11].join(",")
    );
    let small = DecodeLimits {
        max_events: 10,
        ..limits()
    };
    assert!(matches!(
        dec.decode(many.as_bytes(), InputFormat::Json, small),
        DecodeOutcome::TooManyEvents { limit: 10 }
    ));
}

proptest! {
    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let dec = decoder("Nullable(Decimal(10,2))");
        let _ = dec.decode(&body, InputFormat::Json, limits());
        let _ = dec.decode(&body, InputFormat::Ndjson, limits());
    }

    #[test]
    fn valid_events_round_trip(rows in proptest::collection::vec((0u32..1000, 0i64..1_700_000_000, -1e12f64..1e12), 1..50)) {
        let dec = decoder("Float64");
        let body: String = rows.iter().map(|(c, t, v)| format!(r#"{{"customer_id":"c{c}","timestamp":{t},"data":{{"v":{v:?}}}}}"#) + "\n").collect();
        let DecodeOutcome::Valid(b) = dec.decode(body.as_bytes(), InputFormat::Ndjson, limits()) else { panic!("rejected") };
        prop_assert_eq!(b.num_rows(), rows.len());
        let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
        let vs = b.column(2).as_primitive::<Float64Type>();
        for (i, (_, t, v)) in rows.iter().enumerate() {
            prop_assert_eq!(ts.value(i), t * 1_000_000);
            prop_assert_eq!(vs.value(i), *v);
        }
    }
}
