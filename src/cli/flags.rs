//! Range checks for numeric flags, run by clap while parsing: a bad value is refused before any work starts,
//! with clap's usage message naming the flag (exit code 2), instead of surfacing later as a NaN loss or an
//! empty shortlist.

/// A finite number greater than zero (temperatures, radii).
pub fn positive_f64(text: &str) -> Result<f64, String> {
    let value = finite_f64(text)?;
    if value > 0.0 {
        Ok(value)
    } else {
        Err(format!("must be greater than 0, got {value}"))
    }
}

/// A finite number at least zero (learning rates, loss weights).
pub fn non_negative_f64(text: &str) -> Result<f64, String> {
    let value = finite_f64(text)?;
    if value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("must be 0 or more, got {value}"))
    }
}

/// A finite `f32` at least zero (score weights).
pub fn non_negative_f32(text: &str) -> Result<f32, String> {
    non_negative_f64(text).map(|v| v as f32)
}

/// A weight in `[0, 1]`.
pub fn unit_interval_f32(text: &str) -> Result<f32, String> {
    let value = finite_f64(text)? as f32;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be within [0, 1], got {value}"))
    }
}

/// `SLOPE,INTERCEPT` of a calibration: a positive slope and a finite intercept.
pub fn calibration(text: &str) -> Result<crate::engine::Calibration, String> {
    let (slope, intercept) = text
        .split_once(',')
        .ok_or_else(|| format!("{text:?} is not SLOPE,INTERCEPT (e.g. 1.2,-1.6)"))?;
    Ok(crate::engine::Calibration {
        slope: positive_f64(slope)? as f32,
        intercept: finite_f64(intercept)? as f32,
    })
}

/// A count of at least one.
pub fn at_least_one(text: &str) -> Result<usize, String> {
    let value: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if value >= 1 {
        Ok(value)
    } else {
        Err("must be at least 1".to_string())
    }
}

/// A number of seconds (or other u64 count) of at least one.
pub fn at_least_one_u64(text: &str) -> Result<u64, String> {
    at_least_one(text).map(|v| v as u64)
}

fn finite_f64(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("must be a finite number, got {value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_and_non_finite_values_are_refused() {
        assert_eq!(positive_f64("0.03"), Ok(0.03));
        for bad in ["0", "-1", "nan", "NaN", "inf", "-inf", "x", ""] {
            assert!(positive_f64(bad).is_err(), "{bad}");
        }
        assert_eq!(non_negative_f64("0"), Ok(0.0));
        assert!(non_negative_f64("-1e-9").is_err());
        assert!(non_negative_f64("nan").is_err());
        assert_eq!(unit_interval_f32("1"), Ok(1.0));
        assert!(unit_interval_f32("1.01").is_err());
        assert!(unit_interval_f32("nan").is_err());
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-2").is_err());
    }
}
