//! h2spec, the HTTP/2 conformance checker, against a jovian server and against a plain tonic
//! server (`tonic::transport::Server`), both serving the example Greeter: whatever h2spec
//! finds wrong with jovian, it must find wrong with tonic too. jovian serves HTTP/2 with its
//! own server loop over h2, as tonic does over hyper; a finding only jovian has is jovian's
//! own doing. Both lists are printed.
//!
//! Cases are compared by id: h2spec's section (its JUnit `package`, `http2/5.1`), the case's
//! number in it, and its title, as h2spec prints them (`http2/5.1 #8: closed: ...`).
//!
//! h2spec's requests go to the Greeter's SayHello, so they reach a handler that reads the
//! request body before it answers; at h2spec's default path (`/`) both servers answer "not
//! found" at the headers, racing the malformed rest h2spec sends after them. Some cases may
//! still race the server (a request, then a frame the server must reject; a server that
//! answered the request first fails the case), so one run of h2spec could differ from the
//! next, for tonic as for jovian. h2spec runs [`RUNS`] times against each,
//! and a case counts against jovian only if jovian fails it every time while tonic passes it
//! every time.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use jovian::App;
use jovian_examples::{Greeter, GreeterServer, greeter_server};
use jovian_interop::go;
use jovian_registry_memory::MemoryRegistry;
use jovian_tests::process::Process;
use tokio_stream::wrappers::TcpListenerStream;

/// h2spec waits up to 2 s on some cases; the whole run takes about 10 s.
const RUN_LIMIT: Duration = Duration::from_secs(180);
/// Runs of h2spec against each server.
const RUNS: usize = 3;

/// What h2spec found: the ids of the cases that failed, and how many ran.
#[derive(Debug, Default)]
struct Report {
    cases: usize,
    failed: BTreeSet<String>,
}

async fn h2spec(target: &str, addr: SocketAddr) -> Report {
    let dir = tempfile::tempdir().expect("temp dir for h2spec's report");
    let junit = dir.path().join("report.xml");
    let mut command = Command::new(&go::programs().h2spec);
    command
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        // A method both servers serve: requests reach a handler, which reads the body before
        // it answers, rather than a not-found answered at the headers.
        .args(["-P", "/helloworld.Greeter/SayHello"])
        .arg("-j")
        .arg(&junit);
    let mut process = Process::spawn(&format!("h2spec against {target}"), &mut command);
    let status = process.exit_within(RUN_LIMIT).await;
    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|e| {
        panic!(
            "h2spec against {target} wrote no report ({e}; it {}); its output:\n{}",
            status.map_or("was still running".to_owned(), |s| format!("exited {s}")),
            process.output()
        )
    });
    let report = parse_junit(&xml);
    assert!(
        report.cases > 100,
        "h2spec ran only {} cases against {target}:\n{xml}",
        report.cases
    );
    report
}

/// The cases of h2spec's JUnit report, and which failed (an `<error>` or `<failure>`).
fn parse_junit(xml: &str) -> Report {
    let mut report = Report::default();
    for suite in xml.split("<testsuite ").skip(1) {
        let package = attribute(suite, "package").unwrap_or_default();
        for (index, case) in suite.split("<testcase ").skip(1).enumerate() {
            report.cases += 1;
            let body = case.split("</testcase>").next().unwrap_or_default();
            if body.contains("<error") || body.contains("<failure") {
                let title = unescape(&attribute(case, "classname").unwrap_or_default());
                report.failed.insert(format!("{package} #{}: {title}", index + 1));
            }
        }
    }
    report
}

fn attribute(element: &str, name: &str) -> Option<String> {
    let start = element.find(&format!("{name}=\""))? + name.len() + 2;
    let end = element[start..].find('"')?;
    Some(element[start..start + end].to_owned())
}

fn unescape(text: &str) -> String {
    text.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

async fn start_tonic() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(GreeterServer::new(Greeter))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    addr
}

/// The cases that failed in every run, and those that failed in some but not all.
async fn h2spec_runs(target: &str, addr: SocketAddr) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut every: Option<BTreeSet<String>> = None;
    let mut some = BTreeSet::new();
    for _ in 0..RUNS {
        let report = h2spec(target, addr).await;
        some.extend(report.failed.iter().cloned());
        every = Some(match every {
            None => report.failed,
            Some(every) => every.intersection(&report.failed).cloned().collect(),
        });
    }
    let every = every.unwrap_or_default();
    let sometimes = some.difference(&every).cloned().collect();
    (every, sometimes)
}

fn list(failed: &BTreeSet<String>) -> String {
    match failed.is_empty() {
        true => "  (none)".to_owned(),
        false => failed.iter().map(|id| format!("  {id}")).collect::<Vec<_>>().join("\n"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_finds_nothing_wrong_with_jovian_that_it_does_not_find_with_tonic() {
    let running = App::new()
        .registry(MemoryRegistry::new())
        .drain_delay(Duration::ZERO)
        .serve(greeter_server("greeter"))
        .start()
        .await
        .expect("the jovian greeter starts");
    let jovian_addr = running.local_addr("greeter").expect("the greeter's address");
    let tonic_addr = start_tonic().await;
    let (jovian, tonic) = tokio::join!(h2spec_runs("jovian", jovian_addr), h2spec_runs("tonic", tonic_addr));
    for (target, (every, sometimes)) in [("jovian", &jovian), ("tonic", &tonic)] {
        eprintln!(
            "h2spec against {target}, {RUNS} runs: failed every run:\n{}\nfailed some runs:\n{}",
            list(every),
            list(sometimes)
        );
    }
    let tonic_ever: BTreeSet<_> = tonic.0.union(&tonic.1).cloned().collect();
    let only_jovian: BTreeSet<_> = jovian.0.difference(&tonic_ever).cloned().collect();
    assert!(
        only_jovian.is_empty(),
        "h2spec finds these wrong with jovian in every run, and never with tonic:\n{}",
        list(&only_jovian)
    );
    running.stop().await.unwrap();
}
