//! Load smoothing (FIG. 13A: "smoothed with a hysteresis-inducing
//! mechanism"): an exponentially weighted moving average of raw load
//! samples, published only when it moved far enough from the last published
//! value, so transient spikes do not churn every unit's cache. Pure: no
//! time, no I/O.

use switchyard_wire::health::MAX_LOAD;

use crate::settings::SmootherSettings;

/// EWMA plus hysteresis over load samples in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSmoother {
    settings: SmootherSettings,
    smoothed: Option<f64>,
    published: Option<u8>,
}

impl LoadSmoother {
    /// A smoother with no samples yet. `settings.alpha` outside (0, 1] is
    /// clamped into it.
    pub fn new(settings: SmootherSettings) -> Self {
        let alpha = if settings.alpha.is_nan() {
            1.0
        } else {
            settings.alpha.clamp(f64::MIN_POSITIVE, 1.0)
        };
        Self {
            settings: SmootherSettings { alpha, ..settings },
            smoothed: None,
            published: None,
        }
    }

    /// Adds a raw sample (values above 100 count as 100). Returns the new
    /// published load if it changed: the first sample is published as is;
    /// later ones when the average moved at least `hysteresis` points from
    /// the published value, or reached 0 or 100.
    pub fn sample(&mut self, raw: u8) -> Option<u8> {
        let raw = f64::from(raw.min(MAX_LOAD));
        let s = match self.smoothed {
            None => raw,
            Some(prev) => prev + self.settings.alpha * (raw - prev),
        };
        self.smoothed = Some(s);
        // In 0..=100 because s is a convex combination of values in 0..=100.
        let rounded = s.round().clamp(0.0, f64::from(MAX_LOAD)) as u8;
        let publish = match self.published {
            None => true,
            Some(p) if p == rounded => false,
            Some(p) => {
                rounded.abs_diff(p) >= self.settings.hysteresis
                    || rounded == 0
                    || rounded == MAX_LOAD
            }
        };
        if publish {
            self.published = Some(rounded);
            Some(rounded)
        } else {
            None
        }
    }

    /// The smoothed value, if any sample was seen.
    pub fn smoothed(&self) -> Option<f64> {
        self.smoothed
    }

    /// The last published load, if any.
    pub fn published(&self) -> Option<u8> {
        self.published
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smoother(alpha: f64, hysteresis: u8) -> LoadSmoother {
        LoadSmoother::new(SmootherSettings { alpha, hysteresis })
    }

    #[test]
    fn first_sample_is_published() {
        let mut s = smoother(0.3, 5);
        assert_eq!(s.sample(42), Some(42));
        assert_eq!(s.published(), Some(42));
    }

    #[test]
    fn small_moves_are_held_back() {
        let mut s = smoother(1.0, 5);
        s.sample(40);
        assert_eq!(s.sample(44), None);
        assert_eq!(s.sample(36), None);
        assert_eq!(s.published(), Some(40));
        assert_eq!(s.sample(45), Some(45));
        assert_eq!(s.sample(41), None);
    }

    #[test]
    fn spikes_are_averaged_out() {
        let mut s = smoother(0.2, 5);
        s.sample(20);
        // One spike to 35 moves the average by 3 points: not published.
        assert_eq!(s.sample(35), None);
        assert_eq!(s.sample(20), None);
        // A sustained rise is.
        let mut last = None;
        for _ in 0..20 {
            if let Some(p) = s.sample(60) {
                last = Some(p);
            }
        }
        let published = last.expect("sustained change published");
        assert!(published >= 55, "{published}");
    }

    #[test]
    fn extremes_are_always_published() {
        let mut s = smoother(1.0, 50);
        s.sample(3);
        assert_eq!(s.sample(0), Some(0));
        assert_eq!(s.sample(98), Some(98));
        assert_eq!(s.sample(100), Some(100));
        assert_eq!(s.sample(255), None, "clamped to 100, unchanged");
    }

    #[test]
    fn bad_alpha_is_clamped() {
        let mut s = smoother(7.0, 5);
        s.sample(10);
        assert_eq!(s.sample(90), Some(90));
        let mut s = smoother(f64::NAN, 5);
        s.sample(10);
        assert_eq!(s.sample(90), Some(90));
    }
}
