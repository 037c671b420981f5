use std::collections::HashMap;

/// Counts words, ignoring case.
pub fn word_counts(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for w in text.split_whitespace() {
        *counts.entry(w.to_lowercase()).or_insert(0) += 1;
    }
    counts
}

fn main() {
    let c = word_counts("The cat and the hat");
    println!("{:?} it's {}", c.get("the"), c.len());
}
