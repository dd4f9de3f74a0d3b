//! A browser's side of the web console, over plain HTTP: cookies kept by hand (the console's
//! are `__Host-` and `Secure`, which a browser keeps on loopback), no redirects followed, every
//! form posted with the `Origin` a browser would send.

use std::collections::BTreeMap;

/// One browser profile: its cookies, at one console.
pub struct Browser {
    /// `http://127.0.0.1:<admin port>`: the console's origin.
    pub origin: String,
    pub cookies: BTreeMap<String, String>,
    http: reqwest::Client,
}

/// An answer: status, headers, body text.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `value` of the first input named `name`.
    pub fn field(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\" value=\""))?;
        let rest = &self.body[at + name.len() + 15..];
        Some(rest[..rest.find('"')?].to_string())
    }

    /// Every value of `attribute="..."` in the page, in order.
    pub fn attributes(&self, attribute: &str) -> Vec<String> {
        let needle = format!("{attribute}=\"");
        self.body
            .match_indices(&needle)
            .filter_map(|(at, _)| {
                let rest = &self.body[at + needle.len()..];
                rest.find('"').map(|end| rest[..end].to_string())
            })
            .collect()
    }
}

impl Browser {
    pub fn new(origin: &str) -> Browser {
        Browser {
            origin: origin.trim_end_matches('/').to_string(),
            cookies: BTreeMap::new(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, response: reqwest::Response) -> Page {
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            assert!(
                !name.starts_with("__Host-")
                    || (attributes.contains("Secure") && attributes.contains("Path=/")),
                "a __Host- cookie without Secure or Path=/: {set}"
            );
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.get_with(path, &[]).await
    }

    /// A GET with extra request headers.
    pub async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut request = self
            .http
            .get(format!("{}{path}", self.origin))
            .header("cookie", self.cookie_header());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        self.finish(response).await
    }

    /// A GET's status and body.
    pub async fn text(&mut self, path: &str) -> (u16, String) {
        let page = self.get(path).await;
        (page.status, page.body)
    }

    /// Posts a form from the console's own origin.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.origin.clone();
        self.post_from(Some(&origin), path, form).await
    }

    /// Posts a form with the given `Origin` header (or none).
    pub async fn post_from(
        &mut self,
        origin: Option<&str>,
        path: &str,
        form: &[(&str, &str)],
    ) -> Page {
        let mut request = self
            .http
            .post(format!("{}{path}", self.origin))
            .header("cookie", self.cookie_header())
            .form(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        self.finish(response).await
    }

    /// Signs in with an API key as the sign-in page's form does; panics unless it worked.
    pub async fn sign_in(&mut self, key: &str) {
        let page = self.sign_in_with(key).await;
        assert_eq!(page.status, 303, "sign-in failed: {}", page.body);
        assert!(self.cookies.contains_key("__Host-portcullis-console"));
    }

    /// Opens the sign-in page and submits `key`; the answer as it came.
    pub async fn sign_in_with(&mut self, key: &str) -> Page {
        let form = self.get("/console/sign-in").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let state = form.field("state").expect("the sign-in form has a state");
        self.post(
            "/console/auth/api-key",
            &[("state", &state), ("api_key", key)],
        )
        .await
    }

    /// The CSRF token of the current session, as forms carry it.
    pub async fn csrf(&mut self) -> String {
        let page = self.get("/console/approvals").await;
        assert_eq!(page.status, 200, "{}", page.body);
        page.field("csrf")
            .expect("a signed-in page has a csrf field")
    }
}
