//! What keeps the view to its own page and its own address: the security
//! headers, the host and origin checks, the control header.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::UiServer;
use crate::error::UiError;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The host a request is addressed to, without its port.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:7878
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

impl UiServer {
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || self
                .inner
                .hosts
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&name)
    }
}

/// Refuse requests addressed to a host name the server does not know
/// (DNS rebinding), and requests sent by a page of another origin.
pub(super) async fn check_host(
    State(ui): State<UiServer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if !ui.host_allowed(host) {
        return UiError::HostRefused(host.to_owned()).into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let same = origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
        if !same {
            return UiError::OriginRefused(origin.to_owned()).into_response();
        }
    }
    next.run(request).await
}

pub(super) async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Control requests must carry a header a cross-site form cannot set (and
/// that a cross-site script can only set after a CORS preflight this
/// server never allows).
pub(super) fn check_control_header(headers: &HeaderMap) -> Result<(), UiError> {
    match headers.get("x-tributary-control") {
        Some(v) if v == "1" => Ok(()),
        _ => Err(UiError::MissingControlHeader),
    }
}
