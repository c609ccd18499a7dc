//! Stop strings: generation ends where one appears, and it is never sent. Text that could still
//! become the start of a stop string is held back until the next piece decides it, since a stop
//! string may span several tokens.

/// Filters streamed text against a set of stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Text received but not yet passed on: a suffix that begins some stop string.
    held: String,
}

/// What one piece of text let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// Text safe to send.
    pub text: String,
    /// A stop string was reached: `text` ends just before it, and generation should end.
    pub stopped: bool,
}

impl StopStrings {
    /// Empty strings are ignored (they would stop before anything).
    pub fn new(stops: impl IntoIterator<Item = String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    /// Takes the next piece of generated text.
    pub fn push(&mut self, piece: &str) -> Filtered {
        self.held.push_str(piece);
        let first_stop = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first_stop {
            let text = self.held[..at].to_string();
            self.held.clear();
            return Filtered { text, stopped: true };
        }
        let keep = self.partial_suffix_len();
        let text = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        Filtered { text, stopped: false }
    }

    /// The text still held back, at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of the held text that is a proper prefix of a stop string.
    fn partial_suffix_len(&self) -> usize {
        let held = self.held.as_str();
        let longest_stop = self.stops.iter().map(String::len).max().unwrap_or(0);
        let shortest_start = held.len().saturating_sub(longest_stop.saturating_sub(1));
        (shortest_start..held.len())
            .filter(|&start| held.is_char_boundary(start))
            .find(|&start| self.stops.iter().any(|s| s.starts_with(&held[start..])))
            .map_or(0, |start| held.len() - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut filter = StopStrings::new(stops.iter().map(|s| s.to_string()));
        let mut out = String::new();
        for piece in pieces {
            let f = filter.push(piece);
            out.push_str(&f.text);
            if f.stopped {
                return (out, true);
            }
        }
        out.push_str(&filter.finish());
        (out, false)
    }

    #[test]
    fn a_stop_string_spanning_pieces_is_cut_exactly() {
        assert_eq!(run(&["END"], &["Hello E", "N", "D world"]), ("Hello ".into(), true));
    }

    #[test]
    fn held_text_that_turns_out_not_to_stop_is_sent() {
        assert_eq!(run(&["END"], &["Hello E", "N", "o"]), ("Hello ENo".into(), false));
        assert_eq!(run(&["END"], &["Hello E"]), ("Hello E".into(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(run(&["world", "lo"], &["Hello world"]), ("Hel".into(), true));
    }

    #[test]
    fn nothing_is_held_without_a_possible_match() {
        let mut filter = StopStrings::new(["xyz".to_string()]);
        assert_eq!(filter.push("abc").text, "abc");
        assert_eq!(filter.push("ab é").text, "ab é");
    }

    #[test]
    fn multibyte_text_is_split_on_character_boundaries() {
        assert_eq!(run(&["éé"], &["aé", "é b"]), ("a".into(), true));
        assert_eq!(run(&["é!"], &["aé", "x"]), ("aéx".into(), false));
    }
}
