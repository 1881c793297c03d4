//! The translator of `TranslationService`: a small word-by-word dictionary between
//! the languages it knows, and the one rule for naming them.

/// The languages the dictionary knows, as it spells them, in the order of its
/// columns.
pub const LANGUAGES: [&str; 4] = ["en", "pt-BR", "es", "fr"];

/// One row per word, one column per language of [`LANGUAGES`].
const WORDS: &[[&str; 4]] = &[
    ["hello", "olá", "hola", "bonjour"],
    ["world", "mundo", "mundo", "monde"],
    ["file", "arquivo", "archivo", "fichier"],
    ["the", "o", "el", "le"],
    ["is", "é", "es", "est"],
    ["ready", "pronto", "listo", "prêt"],
    ["good", "bom", "bueno", "bon"],
    ["morning", "dia", "día", "matin"],
];

/// A language the dictionary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Language(usize);

impl Language {
    /// The language `tag` names, in any case (`FR`, `pt-br`): language tags are
    /// case-insensitive (RFC 5646). `None` for one the dictionary does not know.
    pub fn parse(tag: &str) -> Option<Language> {
        LANGUAGES
            .iter()
            .position(|l| l.eq_ignore_ascii_case(tag))
            .map(Language)
    }

    /// Its tag as the dictionary spells it (`pt-BR`).
    pub fn tag(self) -> &'static str {
        LANGUAGES[self.0]
    }
}

/// Word-by-word translation of `text` from `from` (detected word by word when
/// `None`) into `to`; a word the dictionary does not know stays as it is.
pub fn translate_text(text: &str, from: Option<Language>, to: Language) -> String {
    text.split_whitespace()
        .map(|w| {
            let lower = w.to_lowercase();
            WORDS
                .iter()
                .find(|row| match from {
                    Some(from) => row[from.0] == lower,
                    None => row.contains(&lower.as_str()),
                })
                .map_or_else(|| w.to_owned(), |row| row[to.0].to_owned())
        })
        .collect::<Vec<_>>()
        .join(" ")
}
