import Foundation

/// A playlist request's `fields` filter, as Spotify's reference describes it: a comma-separated
/// list of the fields to return; a dot reaches into an object (`tracks.total`), parentheses
/// select within each element of a list or within an object (`items(added_at,track(name))`),
/// and a name after `!` is left out (`track(!available_markets)`). Pure: parsed once, applied to
/// a decoded JSON value.
struct FieldsFilter: Equatable {
    /// The names kept, each with what is kept inside it (nil: all of it). Empty: every name.
    var kept: [String: FieldsFilter?] = [:]
    /// The names left out.
    var left: Set<String> = []

    /// The filter `text` names; nil when it does not parse (the fake answers 400).
    init?(_ text: String) {
        var parser = Parser(text: Array(text.unicodeScalars))
        guard let filter = parser.list(), parser.atEnd else { return nil }
        self = filter
    }

    private init() {}

    /// `value` with only the selected fields; a list filtered element by element.
    func apply(to value: Any) -> Any {
        if let list = value as? [Any] { return list.map { self.apply(to: $0) } }
        guard let object = value as? [String: Any] else { return value }
        var out: [String: Any] = [:]
        for (name, member) in object where !self.left.contains(name) {
            if self.kept.isEmpty {
                out[name] = member
            } else if let inner = self.kept[name] {
                out[name] = inner.map { $0.apply(to: member) } ?? member
            }
        }
        return out
    }

    /// Adds `path` (`a.b.c`), with `inner` selected at its end.
    private mutating func keep(_ path: ArraySlice<String>, inner: FieldsFilter?) {
        guard let name = path.first else { return }
        if path.count == 1 {
            // Named twice, once whole: all of it.
            if let existing = self.kept[name], let existing, let inner {
                self.kept[name] = existing.merged(with: inner)
            } else if self.kept[name] == nil || inner == nil {
                self.kept[name] = .some(inner)
            }
            return
        }
        var child: FieldsFilter
        switch self.kept[name] {
        case .some(.none): return  // kept whole already
        case .some(.some(let existing)): child = existing
        case .none: child = FieldsFilter()
        }
        child.keep(path.dropFirst(), inner: inner)
        self.kept[name] = .some(child)
    }

    private func merged(with other: FieldsFilter) -> FieldsFilter {
        var merged = self
        for (name, inner) in other.kept { merged.keep([name][...], inner: inner) }
        merged.left.formUnion(other.left)
        return merged
    }

    private struct Parser {
        let text: [Unicode.Scalar]
        var index = 0

        var atEnd: Bool { self.index == self.text.count }

        /// `item (, item)*` up to a closing parenthesis or the end.
        mutating func list() -> FieldsFilter? {
            var filter = FieldsFilter()
            repeat {
                self.skipSpaces()
                let excluded = self.take("!")
                var path: [String] = []
                repeat {
                    self.skipSpaces()
                    guard let name = self.name() else { return nil }
                    path.append(name)
                } while self.take(".")
                self.skipSpaces()
                var inner: FieldsFilter?
                if self.take("(") {
                    guard let group = self.list(), self.take(")") else { return nil }
                    inner = group
                }
                self.skipSpaces()
                if excluded {
                    // `!name` only: what a name inside it would mean is not written down.
                    guard path.count == 1, inner == nil else { return nil }
                    filter.left.insert(path[0])
                } else {
                    filter.keep(path[...], inner: inner)
                }
            } while self.take(",")
            return filter
        }

        mutating func name() -> String? {
            let start = self.index
            while self.index < self.text.count, !"(),.! ".unicodeScalars.contains(self.text[self.index]) { self.index += 1 }
            guard self.index > start else { return nil }
            var name = String.UnicodeScalarView()
            name.append(contentsOf: self.text[start..<self.index])
            return String(name)
        }

        mutating func take(_ character: Unicode.Scalar) -> Bool {
            guard self.index < self.text.count, self.text[self.index] == character else { return false }
            self.index += 1
            return true
        }

        mutating func skipSpaces() {
            while self.take(" ") {}
        }
    }
}
