//! Geolocation metrics: Acc@1, Acc@5, Acc@161km, mean and median error in km; overall, macro-averaged over
//! cities, and on the slice of posts that do not name their city.

use serde::{Deserialize, Serialize};

use crate::geo::{haversine_km, CityTable, ACC_RADIUS_KM};

/// One evaluated post: its true city, the predicted ranking and its true point.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Table position of the true city.
    pub truth: usize,
    /// Table positions of the predicted cities, best first (at least the top 5 when there are 5 cities).
    pub ranked: Vec<usize>,
    /// The post's true latitude.
    pub lat: f64,
    /// The post's true longitude.
    pub lon: f64,
    /// Whether the post's text names its city.
    pub names_city: bool,
    /// Whether the post carries its author's profile location.
    pub has_profile: bool,
}

/// Metrics of a set of predictions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of posts (for macro: number of cities).
    pub n: usize,
    /// Top-1 city accuracy.
    pub acc1: f64,
    /// Top-5 city accuracy.
    pub acc5: f64,
    /// Share of posts whose predicted city lies within 161 km (100 miles) of the true point.
    pub acc161: f64,
    /// Mean error in km (predicted city centre to true point).
    pub mean_km: f64,
    /// Median error in km.
    pub median_km: f64,
}

impl Metrics {
    /// Micro-averaged metrics of `predictions`.
    pub fn of(predictions: &[&Prediction], table: &CityTable) -> Self {
        if predictions.is_empty() {
            return Self::default();
        }
        let n = predictions.len() as f64;
        let mut errors: Vec<f64> = predictions
            .iter()
            .map(|p| {
                let city = &table.cities()[p.ranked[0]];
                haversine_km(p.lat, p.lon, city.lat, city.lon)
            })
            .collect();
        let acc1 = predictions
            .iter()
            .filter(|p| p.ranked[0] == p.truth)
            .count() as f64
            / n;
        let acc5 = predictions
            .iter()
            .filter(|p| p.ranked.iter().take(5).any(|&c| c == p.truth))
            .count() as f64
            / n;
        let acc161 = errors.iter().filter(|&&e| e <= ACC_RADIUS_KM).count() as f64 / n;
        let mean_km = errors.iter().sum::<f64>() / n;
        Self {
            n: predictions.len(),
            acc1,
            acc5,
            acc161,
            mean_km,
            median_km: median(&mut errors),
        }
    }

    /// Macro average: the metrics of each true city's posts, averaged over cities (each city counts once).
    pub fn macro_of(predictions: &[&Prediction], table: &CityTable) -> Self {
        let mut by_city: Vec<Vec<&Prediction>> = vec![Vec::new(); table.len()];
        for p in predictions {
            by_city[p.truth].push(p);
        }
        let per_city: Vec<Metrics> = by_city
            .iter()
            .filter(|ps| !ps.is_empty())
            .map(|ps| Metrics::of(ps, table))
            .collect();
        Self::mean(&per_city)
            .map(|mut m| {
                m.n = per_city.len();
                m
            })
            .unwrap_or_default()
    }

    /// Field-wise mean of several metric sets (e.g. over seeds); `n` is the first one's.
    pub fn mean(all: &[Metrics]) -> Option<Self> {
        let first = all.first()?;
        let k = all.len() as f64;
        let avg = |f: fn(&Metrics) -> f64| all.iter().map(f).sum::<f64>() / k;
        Some(Self {
            n: first.n,
            acc1: avg(|m| m.acc1),
            acc5: avg(|m| m.acc5),
            acc161: avg(|m| m.acc161),
            mean_km: avg(|m| m.mean_km),
            median_km: avg(|m| m.median_km),
        })
    }
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The report of one method: overall, macro and on posts not naming their city.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodReport {
    /// Micro average over all test posts.
    pub overall: Metrics,
    /// Macro average over cities.
    pub macro_avg: Metrics,
    /// Micro average over the posts that do not name their city.
    pub unnamed: Metrics,
    /// Micro average over the posts that carry a profile location.
    #[serde(default)]
    pub with_profile: Metrics,
}

impl MethodReport {
    /// Builds the report of `predictions`.
    pub fn of(predictions: &[Prediction], table: &CityTable) -> Self {
        let all: Vec<&Prediction> = predictions.iter().collect();
        let unnamed: Vec<&Prediction> = predictions.iter().filter(|p| !p.names_city).collect();
        let with_profile: Vec<&Prediction> = predictions.iter().filter(|p| p.has_profile).collect();
        Self {
            overall: Metrics::of(&all, table),
            macro_avg: Metrics::macro_of(&all, table),
            unnamed: Metrics::of(&unnamed, table),
            with_profile: Metrics::of(&with_profile, table),
        }
    }

    /// Field-wise mean over runs (seeds).
    pub fn mean(runs: &[MethodReport]) -> Option<Self> {
        let pick = |f: fn(&MethodReport) -> &Metrics| {
            runs.iter().map(|r| f(r).clone()).collect::<Vec<_>>()
        };
        Some(Self {
            overall: Metrics::mean(&pick(|r| &r.overall))?,
            macro_avg: Metrics::mean(&pick(|r| &r.macro_avg))?,
            unnamed: Metrics::mean(&pick(|r| &r.unnamed))?,
            with_profile: Metrics::mean(&pick(|r| &r.with_profile))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::City;

    fn table() -> CityTable {
        let city = |id, lat, lon| City {
            id,
            name: format!("c{id}"),
            admin1: None,
            country: "X".into(),
            country_code: "XX".into(),
            lat,
            lon,
            population: 0,
            alternate_names: vec![],
        };
        // c1 and c2 are 111 km apart (1 degree of latitude), c3 far away.
        CityTable::new(vec![
            city(1, 0.0, 0.0),
            city(2, 1.0, 0.0),
            city(3, 0.0, 90.0),
        ])
        .unwrap()
    }

    fn prediction(truth: usize, ranked: Vec<usize>, names_city: bool) -> Prediction {
        let t = table();
        let c = &t.cities()[truth];
        Prediction {
            truth,
            ranked,
            lat: c.lat,
            lon: c.lon,
            names_city,
            has_profile: false,
        }
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let t = table();
        let preds = vec![
            prediction(0, vec![0, 1, 2], true),  // right: 0 km
            prediction(0, vec![1, 0, 2], false), // wrong, 111 km: within 161
            prediction(1, vec![2, 0, 1], false), // wrong, far
            prediction(2, vec![2, 1, 0], true),  // right
        ];
        let report = MethodReport::of(&preds, &t);
        let far = haversine_km(1.0, 0.0, 0.0, 90.0);
        let one_degree = haversine_km(0.0, 0.0, 1.0, 0.0);
        assert_eq!(report.overall.acc1, 0.5);
        assert_eq!(report.overall.acc5, 1.0);
        assert_eq!(report.overall.acc161, 0.75);
        assert!((report.overall.mean_km - (one_degree + far) / 4.0).abs() < 1e-9);
        assert!((report.overall.median_km - one_degree / 2.0).abs() < 1e-9);
        // Macro: city 0 acc 0.5, city 1 acc 0, city 2 acc 1 -> 0.5; unnamed slice: 2 posts, both wrong.
        assert_eq!(report.macro_avg.n, 3);
        assert!((report.macro_avg.acc1 - 0.5).abs() < 1e-12);
        assert_eq!((report.unnamed.n, report.unnamed.acc1), (2, 0.0));
    }
}
