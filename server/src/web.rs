//! The web pages, embedded in the binary: `/board` (the supervisors' live response board) and the
//! files under `/web/`. Plain HTML, CSS and JavaScript modules in `server/web/`, with no build step.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file: its name under `/web/`, media type and contents.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// An embedded file of `server/web/`.
macro_rules! asset {
    ($name:literal, $media_type:expr) => {
        Asset {
            name: $name,
            media_type: $media_type,
            body: include_str!(concat!("../web/", $name)),
        }
    };
}

/// Every embedded file.
const ASSETS: &[Asset] = &[
    asset!("board.html", HTML),
    asset!("board.js", JS),
    asset!("lianxin.js", JS),
    asset!("i18n.js", JS),
    asset!("style.css", CSS),
];

fn serve(name: &str) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.media_type),
                // The files change with the binary: revalidate rather than serve a stale page.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            asset.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

/// `GET /board`: the live response board page.
pub async fn board() -> Response {
    serve("board.html")
}

/// `GET /web/{name}`: one of the pages' files.
pub async fn asset(Path(name): Path<String>) -> Response {
    serve(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_a_page_loads_is_embedded() {
        for asset in ASSETS
            .iter()
            .filter(|a| a.media_type == HTML || a.media_type == JS)
        {
            for reference in asset
                .body
                .split(['"', '\''])
                .filter(|s| s.starts_with("/web/") || (s.starts_with("./") && s.ends_with(".js")))
            {
                let name = reference
                    .trim_start_matches("/web/")
                    .trim_start_matches("./");
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} refers to {reference}, which is not embedded",
                    asset.name
                );
            }
        }
    }
}
