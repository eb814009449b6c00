//! The web pages, embedded in the binary: `/` (the resident's chat), `/worker` (the grid worker's
//! app, installable: `/manifest.webmanifest` and the service worker `/sw.js`), `/board` (the
//! supervisors' live response board) and the files under `/web/`. Plain HTML, CSS and JavaScript
//! modules in `server/web/`, with no build step.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file: its name under `/web/`, media type and contents.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const PNG: &str = "image/png";
const MANIFEST: &str = "application/manifest+json";

/// An embedded file of `server/web/`.
macro_rules! asset {
    ($name:literal, $media_type:expr) => {
        Asset {
            name: $name,
            media_type: $media_type,
            body: include_bytes!(concat!("../web/", $name)),
        }
    };
}

/// Every embedded file.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("worker.html", HTML),
    asset!("board.html", HTML),
    asset!("resident.js", JS),
    asset!("worker.js", JS),
    asset!("app.js", JS),
    asset!("board.js", JS),
    asset!("sw.js", JS),
    asset!("manifest.webmanifest", MANIFEST),
    asset!("icon-192.png", PNG),
    asset!("icon-512.png", PNG),
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

/// `GET /`: the resident's chat.
pub async fn resident() -> Response {
    serve("index.html")
}

/// `GET /worker`: the grid worker's app.
pub async fn worker() -> Response {
    serve("worker.html")
}

/// `GET /board`: the live response board page.
pub async fn board() -> Response {
    serve("board.html")
}

/// `GET /manifest.webmanifest`: the web app manifest (what installing the app uses).
pub async fn manifest() -> Response {
    serve("manifest.webmanifest")
}

/// `GET /sw.js`: the service worker, served from the root so that its scope is every page.
pub async fn service_worker() -> Response {
    serve("sw.js")
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
            .filter(|a| [HTML, JS, MANIFEST].contains(&a.media_type))
        {
            let Ok(body) = std::str::from_utf8(asset.body) else {
                panic!("{} is not UTF-8", asset.name);
            };
            for reference in body.split(['"', '\'']).filter(|s| {
                (s.starts_with("/web/") && !s.ends_with('/'))
                    || (s.starts_with("./") && s.ends_with(".js"))
            }) {
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

    #[test]
    fn the_app_manifest_and_icons_are_whole() {
        let manifest = ASSETS
            .iter()
            .find(|a| a.name == "manifest.webmanifest")
            .map(|a| serde_json::from_slice::<serde_json::Value>(a.body));
        let Some(Ok(manifest)) = manifest else {
            panic!("the manifest is missing or not JSON");
        };
        assert_eq!(manifest["start_url"], "/worker");
        let icons = manifest["icons"].as_array().cloned().unwrap_or_default();
        assert_eq!(icons.len(), 2);
        for icon in icons {
            let src = icon["src"].as_str().unwrap_or_default();
            let name = src.trim_start_matches("/web/");
            let body = ASSETS.iter().find(|a| a.name == name).map(|a| a.body);
            assert!(
                body.is_some_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n")),
                "{src} is not an embedded PNG"
            );
        }
    }
}
