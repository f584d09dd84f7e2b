//! What the SDK spends per DynamoDB request beyond the wire (`make bench-sdk`): the client CPU of
//! N requests against an endpoint that answers at once, per client configuration, so the
//! SDK's own per-request work (orchestrator, endpoint resolution, interceptors, signing,
//! retry bookkeeping, serialisation) is measured apart from the endpoint's. The endpoint is
//! this binary in another process (`serve`), so its CPU is not counted; run the client under
//! `valgrind --tool=callgrind` for where the instructions go.
//!
//! ```sh
//! target/measure/sdk-request [--requests 5000] [--warmup 200] [--config sample,crm] [--op put,transact,get] [--close]
//! ```
//!
//! `--close`: the endpoint closes the connection after every answer, as an HTTP/1.0 server does,
//! so each request also pays a new TCP connection.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Config {
    /// As an AWS sample builds it (`load_defaults`, `Client::new`): the report's reference.
    Sample,
    /// As the functions build it (`crm_shared::aws`).
    Crm,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    /// The reference's request: one `PutItem` of three attributes.
    Put,
    /// The webhook's conversation case: one `TransactWriteItems` of a put and an update.
    Transact,
    /// One `GetItem` (answered with no item).
    Get,
}

struct Options {
    requests: usize,
    warmup: usize,
    configs: Vec<Config>,
    ops: Vec<Op>,
    close: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        requests: 5000,
        warmup: 200,
        configs: vec![Config::Sample, Config::Crm],
        ops: vec![Op::Put, Op::Transact, Op::Get],
        close: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--requests" => o.requests = value()?.parse().map_err(|_| "--requests needs a number")?,
            "--warmup" => o.warmup = value()?.parse().map_err(|_| "--warmup needs a number")?,
            "--config" => o.configs = parse_list(&value()?, &[("sample", Config::Sample), ("crm", Config::Crm)])?,
            "--op" => {
                o.ops = parse_list(
                    &value()?,
                    &[("put", Op::Put), ("transact", Op::Transact), ("get", Op::Get)],
                )?
            }
            "--close" => o.close = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

/// A comma-separated list of names, each one of `known`.
fn parse_list<T: Copy>(list: &str, known: &[(&str, T)]) -> Result<Vec<T>, String> {
    list.split(',')
        .map(|name| {
            known.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| {
                let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
                format!("unknown value {name:?} ({})", names.join(", "))
            })
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return serve();
    }
    let options = parse_args()?;
    // The endpoint: this binary, in its own process, printing its port.
    let mut server = Command::new(std::env::current_exe()?)
        .arg("serve")
        .args(options.close.then_some("--close"))
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().parse()?;
    // SAFETY: single-threaded here; no runtime or other thread exists yet.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
        std::env::set_var("AWS_REGION", "eu-west-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDBENCH");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench-secret");
        std::env::remove_var("AWS_SESSION_TOKEN");
        std::env::remove_var("AWS_PROFILE");
    }
    // As on Lambda: one thread runs the function.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let connections = if options.close { "new per request" } else { "kept alive" };
    println!(
        "Connections {connections}; {} requests after {} warm-up.",
        options.requests, options.warmup
    );
    println!("| config | request | CPU per request (µs) |");
    println!("| --- | --- | ---: |");
    rt.block_on(async {
        for &config in &options.configs {
            let client = client(config).await;
            for &op in &options.ops {
                for _ in 0..options.warmup {
                    request(&client, op).await?;
                }
                let before = process_cpu();
                for _ in 0..options.requests {
                    request(&client, op).await?;
                }
                let per = (process_cpu() - before).as_secs_f64() * 1e6 / options.requests as f64;
                println!("| {config:?} | {op:?} | {per:.1} |");
            }
        }
        Ok::<_, aws_sdk_dynamodb::Error>(())
    })?;
    let _ = server.kill();
    Ok(())
}

async fn client(config: Config) -> aws_sdk_dynamodb::Client {
    match config {
        Config::Sample => {
            aws_sdk_dynamodb::Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
        }
        Config::Crm => crm_shared::aws::dynamodb_client(&crm_shared::aws::load_sdk_config().await),
    }
}

async fn request(client: &aws_sdk_dynamodb::Client, op: Op) -> Result<(), aws_sdk_dynamodb::Error> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    match op {
        Op::Put => {
            client
                .put_item()
                .table_name("crm")
                .item("PK", s("BENCH#putitem-ref"))
                .item("SK", s("7d1c1f4e-1a1b-4c3e-9d8f-0123456789ab"))
                .item("payload", s(r#"{"hello":"world"}"#))
                .send()
                .await?;
        }
        Op::Transact => {
            let put = Put::builder()
                .table_name("crm")
                .item("PK", s("T#t1#C#c1"))
                .item("SK", s("M#01JB0000000000000000000000"))
                .item("body", s("Hello, is my order on its way?"))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .expect("put");
            let update = Update::builder()
                .table_name("crm")
                .key("PK", s("T#t1#C#c1"))
                .key("SK", s("CONTACT"))
                .update_expression("SET last_inbound_at = :t")
                .condition_expression("phone = :p")
                .expression_attribute_values(":t", s("2026-12-02T19:00:00Z"))
                .expression_attribute_values(":p", s("+14155550100"))
                .build()
                .expect("update");
            client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .transact_items(TransactWriteItem::builder().update(update).build())
                .send()
                .await?;
        }
        Op::Get => {
            client
                .get_item()
                .table_name("crm")
                .key("PK", s("T#t1#C#c1"))
                .key("SK", s("CONTACT"))
                .consistent_read(true)
                .send()
                .await?;
        }
    }
    Ok(())
}

fn process_cpu() -> Duration {
    bench::procfs::cpu_time(std::process::id()).expect("process CPU clock")
}

/// Answers every request at once with an empty DynamoDB JSON document (what `PutItem`,
/// `TransactWriteItems` and a `GetItem` of no item return), until stdin closes.
fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let close = std::env::args().nth(2).as_deref() == Some("--close");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        // The parent holds our stdin: when it goes, so do we.
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut answer = Response::builder();
                    if close {
                        answer = answer.header("connection", "close");
                    }
                    Ok::<_, Infallible>(
                        answer
                            .header("content-type", "application/x-amz-json-1.0")
                            .header("x-amzn-requestid", "BENCH")
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .expect("response"),
                    )
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}
