//! The web console's static files (`console/`), served by the local gateway beside the API on
//! the same origin, with the headers CloudFront adds in `template.yaml` (`ConsoleHeaders`).
//! Files are read on every request, so an edit shows on reload.

use std::path::{Path, PathBuf};

use http_body_util::Full;
use hyper::body::Bytes;

/// The console's Content-Security-Policy, with `{media}` standing for the origin of the
/// presigned media links (the media bucket's): nothing but the console's own files, the API on
/// the same origin and the tenant's media. `template.yaml` holds the same policy (a test checks).
pub const CSP_TEMPLATE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: {media}; media-src 'self' {media}; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub struct StaticSite {
    root: PathBuf,
    csp: String,
}

impl StaticSite {
    /// `root` is the `console/` folder; `media_origin` where presigned media links point.
    pub fn new(root: PathBuf, media_origin: &str) -> StaticSite {
        StaticSite {
            root,
            csp: CSP_TEMPLATE.replace("{media}", media_origin),
        }
    }

    /// The response to a `GET`/`HEAD` of `path`, or `None` when the console has no such file.
    pub fn serve(&self, head: bool, path: &str) -> Option<hyper::Response<Full<Bytes>>> {
        let file = self.file_for(path)?;
        let bytes = std::fs::read(&file).ok()?;
        let body = if head { Bytes::new() } else { Bytes::from(bytes) };
        Some(
            hyper::Response::builder()
                .status(200)
                .header("content-type", content_type(&file))
                .header("content-security-policy", &self.csp)
                .header("x-content-type-options", "nosniff")
                .header("referrer-policy", "no-referrer")
                .header("x-frame-options", "DENY")
                // Always revalidated: the files change as the console is worked on.
                .header("cache-control", "no-cache")
                .body(Full::new(body))
                .expect("valid response"),
        )
    }

    /// The file a path names in the console folder: `/` is `index.html`. The console is flat,
    /// so only its top-level files are served (never its tests or their `node_modules`), and
    /// nothing that could leave the folder (`..`, backslashes, hidden files).
    fn file_for(&self, path: &str) -> Option<PathBuf> {
        let relative = path.strip_prefix('/')?;
        let relative = if relative.is_empty() { "index.html" } else { relative };
        let safe = !relative.starts_with('.') && relative.chars().all(is_path_char);
        if !safe || Path::new(relative).extension().is_none() {
            return None;
        }
        let file = self.root.join(relative);
        file.is_file().then_some(file)
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json" | "webmanifest") => "application/json",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> StaticSite {
        StaticSite::new(crate::workspace_root().join("console"), "http://127.0.0.1:4566")
    }

    #[test]
    fn serves_the_index_and_modules_with_the_policy() {
        let index = site().serve(false, "/").expect("index");
        assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
        let csp = index.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self';") && csp.contains("img-src 'self' data: http://127.0.0.1:4566;"));
        let app = site().serve(false, "/app.js").expect("app module");
        assert_eq!(app.headers()["content-type"], "text/javascript; charset=utf-8");
    }

    #[test]
    fn nothing_outside_the_folder_or_hidden_is_served() {
        for path in [
            "/../Cargo.toml",
            "/..",
            "/.gitignore",
            "/a//b.js",
            "/tests/../app.js",
            "/x\\y.js",
            "/missing.js",
            "/tests/package.json",
        ] {
            assert!(site().serve(false, path).is_none(), "{path}");
        }
    }

    #[test]
    fn the_template_deploys_the_same_policy() {
        let template = std::fs::read_to_string(crate::workspace_root().join("template.yaml")).unwrap();
        let deployed = CSP_TEMPLATE.replace("{media}", "https://${MediaBucket.RegionalDomainName}");
        assert!(
            template.contains(&deployed),
            "template.yaml's ConsoleHeaders must carry the console's policy:\n{deployed}"
        );
    }
}
