//! Byte offsets to human positions: owns the mapping from a byte offset in the configuration
//! text to the 1-based line and column that diagnostics print. Knows nothing about TOML.

/// Line starts of one source text, for turning byte offsets into line and column numbers.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex {
    /// Byte offset at which each line starts; the first entry is always 0.
    starts: Vec<usize>,
    /// The text itself, needed to count characters (not bytes) for the column.
    text: String,
}

impl LineIndex {
    /// Indexes `text`. Lines end at `\n`; a `\r` before it belongs to the line it ends.
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Self {
            starts,
            text: text.to_owned(),
        }
    }

    /// The 1-based line and 1-based column (counted in characters) of byte `offset`.
    ///
    /// Offsets past the end map to the end of the text; an offset inside a multi-byte
    /// character maps to that character.
    pub(crate) fn locate(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // `starts[0] == 0 <= offset`, so the partition point is at least 1.
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .text
            .get(line_start..offset)
            .map_or(0, |s| s.chars().count());
        (line, column + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn first_byte_is_line_one_column_one() {
        assert_eq!(LineIndex::new("abc").locate(0), (1, 1));
        assert_eq!(LineIndex::new("").locate(0), (1, 1));
    }

    #[test]
    fn columns_and_lines_count_from_one() {
        let index = LineIndex::new("ab\ncd\n\nef");
        assert_eq!(index.locate(1), (1, 2));
        assert_eq!(index.locate(2), (1, 3)); // the newline itself
        assert_eq!(index.locate(3), (2, 1));
        assert_eq!(index.locate(4), (2, 2));
        assert_eq!(index.locate(6), (3, 1));
        assert_eq!(index.locate(7), (4, 1));
        assert_eq!(index.locate(8), (4, 2));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // "é" is two bytes, "→" three.
        let index = LineIndex::new("é→x\ny");
        assert_eq!(index.locate(5), (1, 3));
        assert_eq!(index.locate(7), (2, 1));
        // Inside a multi-byte character: the character's own column.
        assert_eq!(index.locate(3), (1, 2));
    }

    #[test]
    fn crlf_line_endings_and_offsets_past_the_end() {
        let index = LineIndex::new("a\r\nb");
        assert_eq!(index.locate(3), (2, 1));
        assert_eq!(index.locate(100), (2, 2));
    }
}
