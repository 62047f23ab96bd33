import Glibc

extension StringProtocol {
    /// `body` over the string's UTF-8 bytes, contiguous: a native string's own (every string the
    /// parser makes, every literal, and their substrings), else a copy's. Request-path tests of
    /// a target are made on these: stepping a `String` or `Substring` by index or by
    /// `Character` costs more than the test itself.
    func withUTF8Bytes<Result>(_ body: (UnsafeBufferPointer<UInt8>) throws -> Result) rethrows -> Result {
        if let result = try self.utf8.withContiguousStorageIfAvailable(body) { return result }
        var copy = String(self)
        return try copy.withUTF8(body)
    }

    /// Begins with `prefix`, compared as UTF-8 bytes.
    func hasUTF8Prefix(_ prefix: String) -> Bool {
        self.withUTF8Bytes { $0.starts(withUTF8: prefix) }
    }
}

extension UnsafeBufferPointer<UInt8> {
    /// Begins with `prefix`'s UTF-8 bytes.
    func starts(withUTF8 prefix: String) -> Bool {
        prefix.withUTF8Bytes { prefix in
            prefix.count <= self.count && (prefix.isEmpty || memcmp(self.baseAddress!, prefix.baseAddress!, prefix.count) == 0)
        }
    }

    /// Ends with `suffix`'s UTF-8 bytes.
    func ends(withUTF8 suffix: String) -> Bool {
        suffix.withUTF8Bytes { suffix in
            suffix.count <= self.count
                && (suffix.isEmpty || memcmp(self.baseAddress! + (self.count - suffix.count), suffix.baseAddress!, suffix.count) == 0)
        }
    }

    /// The bytes before the first `?`: a target's path.
    var pathWithoutQuery: UnsafeBufferPointer<UInt8> {
        guard let mark = self.firstIndex(of: UInt8(ascii: "?")) else { return self }
        return UnsafeBufferPointer(rebasing: self[..<mark])
    }
}
