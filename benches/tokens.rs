//! Criterion micro-benchmarks of the positional-token parsers.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rip_server::cli::{parse_serve_args, Token};

fn tokens(c: &mut Criterion) {
    c.bench_function("tokens/w:4", |b| b.iter(|| Token::parse(black_box("w:4"))));
    c.bench_function("tokens/r:5000,600s,10r", |b| {
        b.iter(|| Token::parse(black_box("r:5000,600s,10r")))
    });
    let line: Vec<String> = ["apps/api", "w:auto", "r:100,60s", "http:5002"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.bench_function("tokens/full command line", |b| {
        b.iter(|| parse_serve_args(black_box(&line)))
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
