import ArgumentParser
import Foundation
import NIOPosix
import SpotifyProxy

/// `[users]` and the login keys, with the flags that override them.
struct UserOptions: ParsableArguments {
    @OptionGroup var file: ConfigFileOption
    @Option(name: .long, help: "The user's label.")
    var user: String = "default"

    func validate() throws {
        do { try UserStore.checkLabel(self.user) } catch { throw ValidationError(error.message) }
    }

    func load(_ overrides: ConfigurationOverrides = .init()) throws -> (ProxyConfiguration, UserStore) {
        let config = try self.file.load(overrides)
        return (config, UserStore(directory: config.users.directory, commands: config.commands))
    }
}

struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Log a Spotify user in (authorization code with PKCE) and keep their refresh token for the proxy.",
        discussion: """
            Prints a URL to open in a browser; once the user agrees, Spotify sends the browser back to the \
            redirect URI (default http://127.0.0.1:8888/callback, which must be registered in the app's settings \
            on the Spotify dashboard) and the refresh token is stored in [users] dir as LABEL.json (mode 0600).
            """)
    @OptionGroup var options: UserOptions
    @Option(name: .long, help: "Space-separated scopes (overrides spotify.scopes).")
    var scopes: String?
    @Option(name: .long, help: "Redirect URI registered for the app (overrides spotify.redirect_uri).")
    var redirectURI: String?
    @OptionGroup var tokenEndpoint: TokenURLOption

    func run() async throws {
        let (config, store) = try self.options.load(.init(tokenURL: self.tokenEndpoint.tokenURL))
        let redirect = try exitOnConfigurationError {
            do throws(ConfigurationError) {
                return try RedirectURI(self.redirectURI ?? config.redirectURI, key: self.redirectURI == nil ? "spotify.redirect_uri" : "--redirect-uri")
            } catch {
                throw self.redirectURI == nil ? error : error.onCommandLine
            }
        }
        guard let clientID = config.clientID else {
            throw configurationFailure(
                ConfigurationError(
                    "missing spotify.client_id (or SPOTIFY_CLIENT_ID): the login needs your app's client id from https://developer.spotify.com/dashboard"))
        }
        do throws(ConfigurationError) { try store.checkCanSave() } catch { throw configurationFailure(error) }
        let flow = LoginFlow(
            settings: .init(
                label: self.options.user, scopes: self.scopes.map { $0.split(separator: " ").map(String.init) } ?? config.scopes,
                redirectURI: redirect, authorizeURL: config.authorizeURL, tokenURL: config.tokenURL, apiURL: config.apiURL,
                clientID: clientID, clientSecret: config.clientSecret, store: store))
        do {
            let user = try await UpstreamClient.withRunning(configuration: config.upstream) { upstream in
                try await flow.run(client: upstream, group: MultiThreadedEventLoopGroup.singleton, show: { announce($0) })
            }
            announce(
                "logged in: user \(user.label)\(user.spotifyUserID.map { " (Spotify id \($0))" } ?? ""), scopes \(user.scopes.joined(separator: " ")); stored in \(store.path(of: user.label))"
            )
        } catch {
            writeStandardError("spotify-proxy: login failed: \(error)\n")
            throw ExitCode(1)
        }
    }
}

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the logged-in users: label, Spotify id, scopes, and the days left on each refresh token.")
    @OptionGroup var target: RunningProxyOptions
    @OptionGroup var file: ConfigFileOption

    func run() async throws {
        let config = try self.file.load()
        let store = UserStore(directory: config.users.directory, commands: config.commands)
        let labels = store.labels()
        guard !labels.isEmpty else {
            print("no users logged in (\(store.directory)); run: \(config.commands.login(user: "LABEL"))")
            return
        }
        // The running proxy's view (state, token expiry), asked as `status` asks it: its
        // address (https:// with its own certificate), the access key.
        let live: UsersTable.Live
        do {
            let response = try await self.target.send(method: "GET", path: "/readyz", config: config)
            switch response.status {
            // 503: not ready, and still saying what it holds for each user.
            case 200, 503: live = .states(UsersTable.live(fromReadyz: Array(response.body.readableBytesView)))
            case 401: live = .unavailable(self.target.givenKey == nil ? "(proxy wants a key: --key)" : "(proxy refused the key given)")
            default: live = .unavailable("(proxy answered \(response.status))")
            }
        } catch {
            live = .unavailable("(proxy not running)")
        }
        print(UsersTable.render(labels.map { label in (label, Result { try store.load(label) }.mapError { $0 as any Error }) }, live: live, now: Date()))
    }
}

struct Logout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Forget a user: deletes their stored refresh token.")
    @OptionGroup var options: UserOptions

    func run() async throws {
        let (_, store) = try self.options.load()
        do {
            if try store.delete(self.options.user) {
                print("user \(self.options.user) logged out (\(store.path(of: self.options.user)) deleted)")
            } else {
                writeStandardError("spotify-proxy: no user \(self.options.user) in \(store.directory)\n")
                throw ExitCode(1)
            }
        } catch let error as UserStoreError {
            writeStandardError("spotify-proxy: \(error.message)\n")
            throw ExitCode(1)
        }
    }
}
