//! Receivers the notifier tests send to: an HTTP server that records
//! requests, an SMTP sink that records mails.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct HttpReq {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// What a receiver answers a request with: status line and body (for a
/// `302`, the Location).
pub type Answer = Box<dyn Fn(&HttpReq, usize) -> (String, String) + Send>;

/// A tiny HTTP server: records every request; `/flaky` fails its first
/// request with 500, `/gone` always answers 404, the rest 200.
pub fn http_receiver() -> (u16, Arc<Mutex<Vec<HttpReq>>>) {
    http_receiver_with(Box::new(|q: &HttpReq, earlier: usize| {
        let status = match q.path.as_str() {
            "/flaky" if earlier == 0 => "500 Internal Server Error",
            "/gone" => "404 Not Found",
            _ => "200 OK",
        };
        (status.to_string(), "ok".to_string())
    }))
}

/// As [`http_receiver`], answering with `answer(request, earlier requests
/// to its path)`.
pub fn http_receiver_with(answer: Answer) -> (u16, Arc<Mutex<Vec<HttpReq>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::<HttpReq>::new()));
    let rec = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let (status, answer_body) = {
                let mut g = rec.lock().unwrap();
                let earlier = g.iter().filter(|q| q.path == path).count();
                let q = HttpReq {
                    path: path.clone(),
                    headers,
                    body,
                };
                let a = answer(&q, earlier);
                g.push(q);
                a
            };
            // A 302's "body" is where it points.
            let (location, answer_body) = if status.starts_with("302") {
                (format!("Location: {answer_body}\r\n"), String::new())
            } else {
                (String::new(), answer_body)
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\n{location}Content-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{answer_body}",
                answer_body.len()
            );
        }
    });
    (port, seen)
}

/// A tiny SMTP server: records each message's envelope and DATA.
/// Messages an SMTP sink got: (envelope commands, DATA).
pub type Mails = Arc<Mutex<Vec<(Vec<String>, String)>>>;

pub fn smtp_sink() -> (u16, Mails) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let _ = s.write_all(b"220 sink ESMTP\r\n");
            let mut envelope = Vec::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let cmd = line.trim_end().to_string();
                let upper = cmd.to_ascii_uppercase();
                let reply: &[u8] = if upper.starts_with("EHLO") {
                    b"250-sink\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n"
                } else if upper == "DATA" {
                    let _ = s.write_all(b"354 go ahead\r\n");
                    let mut data = String::new();
                    loop {
                        let mut l = String::new();
                        if r.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                            break;
                        }
                        data.push_str(&l);
                    }
                    rec.lock().unwrap().push((envelope.clone(), data));
                    b"250 queued\r\n"
                } else if upper == "QUIT" {
                    let _ = s.write_all(b"221 bye\r\n");
                    break;
                } else {
                    envelope.push(cmd);
                    b"250 ok\r\n"
                };
                let _ = s.write_all(reply);
            }
        }
    });
    (port, seen)
}
