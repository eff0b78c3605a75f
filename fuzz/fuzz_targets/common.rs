//! The event type every decoder target uses: one field of each kind of parser.
use meterbase_schema::{DecodeLimits, EventDecoder, EventTypeDef, EventTypeSpec};

pub fn decoder() -> EventDecoder {
    let spec: EventTypeSpec = serde_json::from_str(
        r#"{"name":"fuzz","dataschema":{"data":{
            "f":"Float64","d":"Nullable(Decimal(12,3))","i":"Nullable(Int16)","u":"Nullable(UInt64)",
            "s":"Nullable(String)","b":"Nullable(Bool)","day":"Nullable(Date)","at":"Nullable(DateTime64)",
            "id":"Nullable(UUID)"}}}"#,
    )
    .expect("spec");
    let def = EventTypeDef::from_spec(spec, "fuzz".into(), chrono::Utc::now()).expect("definition");
    EventDecoder::new(&def).expect("decoder")
}

pub fn limits() -> DecodeLimits {
    DecodeLimits {
        max_events: 1000,
        now: 1_750_000_000_000_000,
        ..DecodeLimits::default()
    }
}
