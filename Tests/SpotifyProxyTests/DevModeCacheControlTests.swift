import NIOHTTP1
import Testing

@testable import SpotifyProxy

@Suite("Development mode: an assembled answer's Cache-Control")
struct DevModeCacheControlTests {
    static func part(_ status: Int, _ cacheControl: String?, age: Int? = nil) -> (answer: UpstreamAnswer, age: Int?) {
        (UpstreamAnswer(status: status, headers: HTTPHeaders(cacheControl.map { [("Cache-Control", $0)] } ?? []), body: []), age)
    }

    @Test("as fresh as its least fresh part, private if one is; none when a part says nothing or forbids storing", arguments: [
        ([part(200, "public, max-age=7200"), part(200, "public, max-age=7200", age: 3000)], "public, max-age=4200"),
        ([part(200, "public, max-age=7200"), part(404, "private, max-age=0")], "public, max-age=7200"),
        ([part(200, "public, max-age=60"), part(200, "private, max-age=600")], "private, max-age=60"),
        ([part(200, "public, max-age=60", age: 90)], "public, max-age=0"),
        ([part(200, "public, max-age=7200"), part(200, nil)], nil),
        ([part(200, "no-store, max-age=60")], nil),
        ([part(404, "private, max-age=0")], nil),
    ] as [([(answer: UpstreamAnswer, age: Int?)], String?)])
    func assembled(parts: [(answer: UpstreamAnswer, age: Int?)], expected: String?) {
        #expect(DevModeAssembler.cacheControl(of: parts) == expected)
    }
}
