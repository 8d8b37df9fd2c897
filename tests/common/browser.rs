//! A headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, which `./dev.sh test` installs): enough of the
//! protocol for the console's tests to open pages, click, type, read text
//! and take screenshots.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&self.base).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A page element.
#[derive(Clone, Debug)]
pub struct Element(String);

fn call(method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
    let req = ureq::request(method, url).timeout(Duration::from_secs(60));
    let res = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(&b.to_string()),
        None => req.call(),
    };
    let (ok, resp) = match res {
        Ok(r) => (true, r),
        Err(ureq::Error::Status(_, r)) => (false, r),
        Err(e) => return Err(e.to_string()),
    };
    let v: Value = serde_json::from_str(&resp.into_string().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    if ok {
        Ok(v["value"].clone())
    } else {
        Err(v["value"]["message"].as_str().unwrap_or("webdriver error").to_string())
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub fn start() -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: the browser tests need Debian's chromium and chromium-driver (./dev.sh test installs them)"
            );
        }
        let port = super::free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while call("GET", &format!("{root}/status"), None)
            .map(|v| v["ready"] != true)
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        } } });
        let v = call("POST", &format!("{root}/session"), Some(caps)).expect("a Chromium session");
        let id = v["sessionId"].as_str().expect("session id").to_string();
        Browser {
            driver,
            base: format!("{root}/session/{id}"),
            _profile: profile,
        }
    }

    fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        call("POST", &format!("{}{path}", self.base), Some(body))
    }

    pub fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).expect("navigate");
    }

    pub fn find(&self, css: &str) -> Option<Element> {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .ok()?;
        v[ELEMENT].as_str().map(|s| Element(s.to_string()))
    }

    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.post("/elements", json!({ "using": "css selector", "value": css }))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_string())))
            .collect()
    }

    /// Waits up to `within` for an element matching `css`.
    pub fn wait(&self, css: &str, within: Duration) -> Element {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no `{css}` within {within:?}; the page: {}",
                self.page_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until `css` holds text containing `want`; returns the text.
    pub fn wait_text(&self, css: &str, want: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.find(css) {
                let t = self.text(&e);
                if t.contains(want) {
                    return t;
                }
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never said {want:?} within {within:?}; the page: {}",
                self.page_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn click(&self, e: &Element) {
        self.post(&format!("/element/{}/click", e.0), json!({})).expect("click");
    }

    pub fn type_into(&self, e: &Element, text: &str) {
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text }))
            .expect("type");
    }

    pub fn text(&self, e: &Element) -> String {
        call("GET", &format!("{}/element/{}/text", self.base, e.0), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The address of the page shown now.
    pub fn url(&self) -> String {
        call("GET", &format!("{}/url", self.base), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn page_text(&self) -> String {
        self.find("body").map(|b| self.text(&b)).unwrap_or_default()
    }

    /// Runs `script` in the page (its `return` value back as JSON).
    pub fn run(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .expect("script")
    }

    /// Runs an async `script`; it calls `arguments[0]` with its result.
    pub fn run_async(&self, script: &str) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": [] }))
            .expect("async script")
    }

    /// The browser console's messages so far (errors, CSP violations).
    pub fn console_log(&self) -> Vec<String> {
        self.post("/se/log", json!({ "type": "browser" }))
            .or_else(|_| {
                call(
                    "POST",
                    &format!("{}/log", self.base),
                    Some(json!({ "type": "browser" })),
                )
            })
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|m| {
                format!(
                    "{} {}",
                    m["level"].as_str().unwrap_or(""),
                    m["message"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = call("GET", &format!("{}/screenshot", self.base), None).expect("screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .unwrap_or_default()
    }
}
