//! Prints, for a set of flash geometries, what the store accepts: the largest value
//! (`Store::max_value_limit`) and the capacity an empty store advertises with that limit and
//! with a quarter-page limit. The README's geometry table comes from this:
//! `cargo run --release --example geometry`.

use mqtt_persist::flash::{SimFlash, block_on};
use mqtt_persist::{Config, Store};

fn row<const P: usize, const N: usize, const W: usize>() {
    let limit = Store::<&mut SimFlash<P, N, W, W>, N>::max_value_limit();
    let mut f = SimFlash::<P, N, W, W>::boxed();
    let cap =
        |f: &mut SimFlash<P, N, W, W>, max: usize| match block_on(Store::<_, N>::mount(f, Config::new(max.max(1)))) {
            Ok(s) => format!("{}", s.usage().capacity_bytes),
            Err((_, e)) => format!("{e:?}"),
        };
    let quarter = (P - 32) / 4;
    println!(
        "| {P:>6} x {N:<3} | {W:>2} | {limit:>6} | {:>9} | {:>9} | {:>5.1} % |",
        cap(&mut f, limit),
        cap(&mut f, quarter.min(limit)),
        match block_on(Store::<_, N>::mount(&mut *f, Config::new(quarter.min(limit).max(1)))) {
            Ok(s) => 100.0 * s.usage().capacity_bytes as f64 / (P * N) as f64,
            Err(_) => 0.0,
        }
    );
}

fn main() {
    println!("| pages          | W  | max value | capacity (max) | capacity (quarter page) | share |");
    println!("|---|---|---|---|---|---|");
    row::<512, 4, 1>();
    row::<512, 4, 8>();
    row::<512, 8, 8>();
    row::<1024, 4, 1>();
    row::<1024, 4, 8>();
    row::<1024, 4, 32>();
    row::<1024, 8, 32>();
    row::<2048, 4, 8>();
    row::<2048, 4, 32>();
    row::<2048, 16, 8>();
    row::<4096, 4, 4>();
    row::<4096, 16, 4>();
    row::<4096, 64, 4>();
    row::<4096, 64, 32>();
    row::<131072, 4, 32>();
    row::<131072, 8, 32>();
}
