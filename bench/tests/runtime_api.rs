//! The bench's Runtime API speaks the protocol the real `lambda_runtime` client expects: the
//! hello-world binary (built by this package's test run) takes events and answers them. No
//! timings are asserted here — those belong in the report, never in a test.

use std::time::Duration;

use bench::functions::Proc;
use bench::runtime_api::{Reply, RuntimeApi};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_answers_events_through_the_bench_runtime_api() {
    let rt = RuntimeApi::start().await.unwrap();
    let env: Vec<(String, String)> = [
        ("AWS_LAMBDA_RUNTIME_API", rt.host_port()),
        ("AWS_LAMBDA_FUNCTION_NAME", "hello".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("RUST_LOG", "error".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let _proc = Proc::spawn(env!("CARGO_BIN_EXE_hello-lambda").as_ref(), &env, None).unwrap();
    assert!(rt.wait_first_next(Duration::from_secs(30)).await.is_some());
    for i in 0..3 {
        let body = format!("{{\"n\":{i}}}");
        let reply = rt.invoke(body.clone().into(), Duration::from_secs(30)).await.unwrap();
        assert_eq!(reply, Reply::Response(body.into()));
    }
    assert!(rt.init_error().is_none());
}
