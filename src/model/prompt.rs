//! Location prompts: the text a city is encoded from ("a post of location Austin, Texas, United States").
//!
//! Several templates may be used at once; a city's vector is the mean of its templates' unit embeddings, so
//! a post's score is the mean of its cosine similarities to the templates.

use serde::{Deserialize, Serialize};

use super::error::{ModelError, Result};
use crate::geo::{place_name, City};

/// The default template, after the method's "a tweet of location ..." prompt.
pub const DEFAULT_TEMPLATE: &str = "a post of location {place}";

/// Prompt templates with placeholders `{place}` ("name, region, country"), `{name}`, `{admin1}`, `{country}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LocationPrompts {
    templates: Vec<String>,
}

impl Default for LocationPrompts {
    fn default() -> Self {
        Self {
            templates: vec![DEFAULT_TEMPLATE.to_string()],
        }
    }
}

impl LocationPrompts {
    /// Checks that there is at least one template and each names the place.
    pub fn new(templates: Vec<String>) -> Result<Self> {
        if templates.is_empty() {
            return Err(ModelError::InvalidSetting(
                "at least one prompt template is needed".into(),
            ));
        }
        if let Some(bad) = templates
            .iter()
            .find(|t| !t.contains("{place}") && !t.contains("{name}"))
        {
            return Err(ModelError::InvalidSetting(format!(
                "prompt template {bad:?} names neither {{place}} nor {{name}}"
            )));
        }
        Ok(Self { templates })
    }

    /// The templates.
    pub fn templates(&self) -> &[String] {
        &self.templates
    }

    /// Template `index` filled in for `city`.
    pub fn render(&self, index: usize, city: &City) -> String {
        self.templates[index]
            .replace("{place}", &place_name(city))
            .replace("{name}", &city.name)
            .replace("{admin1}", city.admin1.as_deref().unwrap_or(""))
            .replace("{country}", &city.country)
    }

    /// All prompts of all `cities`, template-major: `[t0(c0), t0(c1), ..., t1(c0), ...]`.
    pub fn render_all(&self, cities: &[&City]) -> Vec<String> {
        (0..self.templates.len())
            .flat_map(|t| cities.iter().map(move |c| self.render(t, c)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_every_placeholder() {
        let city = City {
            id: 4671654,
            name: "Austin".into(),
            admin1: Some("Texas".into()),
            country: "United States".into(),
            country_code: "US".into(),
            lat: 30.27,
            lon: -97.74,
            population: 1,
            alternate_names: vec![],
        };
        let prompts = LocationPrompts::new(vec![
            DEFAULT_TEMPLATE.into(),
            "{name} in {admin1} ({country})".into(),
        ])
        .unwrap();
        assert_eq!(
            prompts.render(0, &city),
            "a post of location Austin, Texas, United States"
        );
        assert_eq!(
            prompts.render_all(&[&city])[1],
            "Austin in Texas (United States)"
        );
        assert!(LocationPrompts::new(vec!["no place here".into()]).is_err());
        assert!(LocationPrompts::new(vec![]).is_err());
    }
}
