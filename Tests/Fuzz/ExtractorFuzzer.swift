import Foundation

// libFuzzer entry point, built and run by `scripts/fuzz` (not part of the SwiftPM package:
// compiled with `-sanitize=fuzzer,address` together with the tee's parser and extractor
// sources, which import nothing but Foundation).
//
// For every input: the parser either rejects it or yields a value; that value serializes to
// text Foundation's JSONSerialization accepts (valid JSON), which parses and serializes back to
// the same text (a fixed point); and the entity extractor walks it without crashing. Any crash,
// sanitizer report, fatalError or timeout (`-timeout`) is a finding.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let data = Data(bytes: bytes, count: count)
    guard let value = try? JSONValue.parse(data) else { return 0 }
    let text = value.serialized()
    guard (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed)) != nil else {
        fatalError("serialized output is not valid JSON: \(text.prefix(200))")
    }
    guard let again = try? JSONValue.parse(Data(text.utf8)) else {
        fatalError("the parser rejects its own output: \(text.prefix(200))")
    }
    guard again.serialized() == text else {
        fatalError("parse(serialize(x)) changed: \(text.prefix(200))")
    }
    let batch = EntityExtractor.extract(from: value)
    // Every extracted entity has the non-empty id and the name it was found by.
    for entity in Array(batch.artists.values) + Array(batch.albums.values) + Array(batch.tracks.values)
    where entity.id.isEmpty || entity.name == nil {
        fatalError("an entity without an id or a name: \(entity.id)")
    }
    return 0
}
