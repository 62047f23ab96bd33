import FakeSpotify
import Foundation
import NIOCore
import SpotifyCatalog
import SpotifyProxy
import SpotifyProxyTestSupport
import Testing


@Suite("Fuzzing the extractor and the link rewriter with mutated recorded responses")
struct FuzzTests {
    static let sources = ["artist", "album", "search-tracks", "several-artists", "track", "error-429-rate-limit"]
    static let pieces = [#"""#, "{", "}", "[", "]", ",", ":", "null", "\\", "\\u00", "https://api.spotify.com/", #""type":"track""#, #""id":"#, "\u{0}", "é"]

    static func mutate(_ input: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var bytes = input
        for _ in 0..<Int.random(in: 1...8, using: &rng) {
            guard !bytes.isEmpty else { break }
            let at = Int.random(in: 0..<bytes.count, using: &rng)
            switch Int.random(in: 0..<5, using: &rng) {
            case 0: bytes[at] = UInt8.random(in: 0...255, using: &rng)
            case 1: bytes.remove(at: at)
            case 2: bytes.insert(contentsOf: Array(Self.pieces.randomElement(using: &rng)!.utf8), at: at)
            case 3: bytes = Array(bytes[..<at])
            default:
                let end = min(bytes.count, at + Int.random(in: 1...64, using: &rng))
                bytes.insert(contentsOf: bytes[at..<end], at: Int.random(in: 0..<bytes.count, using: &rng))
            }
        }
        return bytes
    }

    /// Mutations of the parsed tree: always valid JSON, with the shapes the extractor and the
    /// rewriter must survive (nulls, missing members, wrong types, links in odd places).
    static func mutateTree(_ value: JSONValue, _ rng: inout SplitMix64, depth: Int = 0) -> JSONValue {
        switch value {
        case .object(var object):
            for key in object.keys.sorted() {
                switch Int.random(in: 0..<12, using: &rng) {
                case 0: object[key] = nil
                case 1: object[key] = .null
                case 2: object[key] = .string("https://api.spotify.com/v1/\(key)?offset=5&limit=5")
                case 3: object[key] = .array([object[key]!, .null])
                case 4: object[key] = .number(Double(Int.random(in: -5...5, using: &rng)))
                default: object[key] = Self.mutateTree(object[key]!, &rng, depth: depth + 1)
                }
            }
            return .object(object)
        case .array(let items):
            var out = items.map { Self.mutateTree($0, &rng, depth: depth + 1) }
            if !out.isEmpty, Bool.random(using: &rng) { out.append(out[Int.random(in: 0..<out.count, using: &rng)]) }
            if Int.random(in: 0..<4, using: &rng) == 0 { out.insert(.null, at: 0) }
            return .array(out)
        case .string(let text):
            return Int.random(in: 0..<6, using: &rng) == 0 ? .string("\"https://api.spotify.com/\(text)\\") : value
        default:
            return value
        }
    }

    @Test("2,000 mutated bodies: the extractor throws or returns, never crashes; the rewriter keeps valid JSON valid", arguments: [1, 2, 3, 4])
    func mutations(seed: UInt64) throws {
        var rng = SplitMix64(state: seed)
        let inputs = try Self.sources.map { Array(try RecordedResponses.data($0)) }
        var valid = 0
        for round in 0..<500 {
            let source = inputs[round % inputs.count]
            let input = round % 2 == 0
                ? Self.mutate(source, &rng)
                : Array(Self.mutateTree(try JSONValue.parse(Data(source)), &rng).serialized().utf8)
            let parsed = try? JSONValue.parse(Data(input))
            if let parsed {
                valid += 1
                _ = EntityExtractor.extract(from: parsed)
            } else {
                #expect(throws: (any Error).self) { try EntityExtractor.extract(from: Data(input)) }
            }
            // Rewrite in random chunks, as bodies arrive.
            var rewriter = LinkRewriter(upstreamBases: ["https://api.spotify.com"], proxyBase: "http://127.0.0.1:8080")
            var output = ByteBuffer()
            var offset = 0
            while offset < input.count {
                let length = Int.random(in: 1...4096, using: &rng)
                rewriter.rewrite(ByteBuffer(bytes: input[offset..<min(input.count, offset + length)]), into: &output)
                offset += length
            }
            rewriter.finish(into: &output)
            let rewritten = Data(output.readableBytesView)
            if parsed != nil {
                #expect((try? JSONValue.parse(rewritten)) != nil, "seed \(seed) round \(round): rewriting broke valid JSON")
            }
            #expect(!rewritten.isEmpty || input.isEmpty)
        }
        // The mutations must not all be trivially invalid, or the rewriter check proves little.
        #expect(valid > 250)
    }

    @Test("the merge rule on 1,000 pairs of mutated recorded objects: present members win, absent ones are kept, a replay changes nothing")
    func mergeRule() throws {
        var rng = SplitMix64(state: 11)
        let sources = try Self.sources.map { try JSONValue.parse(try RecordedResponses.data($0)) }
        /// The rule, stated member by member: where `later` has nothing, `stored` stays as it
        /// was; where both are objects, each member follows the rule; elsewhere `later` wins.
        func follows(_ stored: JSONValue?, _ later: JSONValue?, _ merged: JSONValue?) -> Bool {
            guard let later else { return merged == stored }
            guard case .object(let old) = stored, case .object(let new) = later else { return merged == later }
            guard case .object(let out) = merged, Set(out.keys) == Set(old.keys).union(new.keys) else { return false }
            return out.keys.allSatisfy { follows(old[$0], new[$0], out[$0]) }
        }
        for round in 0..<1000 {
            let source = sources[round % sources.count]
            let stored = Self.mutateTree(source, &rng).strippingNulls()
            let later = Self.mutateTree(source, &rng).strippingNulls()
            let merged = stored.merging(later)
            #expect(follows(stored, later, merged), "round \(round)")
            #expect(merged.merging(later) == merged, "round \(round): replaying the later sighting changed the result")
        }
    }

    @Test("random bytes: the parser rejects or accepts quickly, never crashes")
    func randomBytes() {
        var rng = SplitMix64(state: 42)
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...256, using: &rng)).map { _ in
                Bool.random(using: &rng) ? UInt8.random(in: 0...255, using: &rng) : Array("{}[]\",:0123456789.eE-tfn\\u ".utf8).randomElement(using: &rng)!
            }
            _ = try? EntityExtractor.extract(from: Data(bytes))
        }
    }
}
