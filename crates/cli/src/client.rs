//! What the `sql` and `import` clients share: the server address as the user may type it,
//! and the HTTP agent.

use std::time::Duration;

/// `localhost:8080`, `127.0.0.1:8080/` and `http://host:port` all name the same server; a
/// scheme other than http(s) is refused with the fix.
pub fn base_url(given: &str) -> Result<String, String> {
    let given = given.trim().trim_end_matches('/');
    if given.is_empty() {
        return Err("--url is empty: give the server address, e.g. http://127.0.0.1:8080".into());
    }
    match given.split_once("://") {
        None => Ok(format!("http://{given}")),
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(given.to_string()),
        Some((scheme, _)) => Err(format!(
            "--url {given:?}: use an http:// or https:// address (scheme {scheme:?} is not HTTP)"
        )),
    }
}

/// An agent that hands every status back as a response; `timeout` bounds each request.
pub fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .new_agent()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_scheme_are_http() {
        assert_eq!(
            base_url("localhost:18085").unwrap(),
            "http://localhost:18085"
        );
        assert_eq!(base_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(base_url("https://h").unwrap(), "https://h");
        assert!(base_url("ftp://h").unwrap_err().contains("http://"));
        assert!(base_url(" ").is_err());
    }
}
