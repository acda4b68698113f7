import Foundation
import RelayFuzzTargets

// libFuzzer's entry point (`scripts/fuzz` builds this with -sanitize=fuzzer,address and
// -DFUZZING, and libFuzzer supplies `main`). The target is named by RELAY_FUZZ_TARGET.
private let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["RELAY_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        fatalError("RELAY_FUZZ_TARGET must be one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeBufferPointer(start: data, count: data == nil ? 0 : size)
    if let problem = target.run(input) { fatalError("\(target.rawValue): \(problem)") }
    return 0
}

#if FUZZING
    // SwiftPM links an executable's entry as `<module>_main`; under the fuzzer it hands the command
    // line to libFuzzer's driver.
    @_silgen_name("LLVMFuzzerRunDriver")
    private func runFuzzerDriver(
        _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    @_cdecl("relay_fuzz_main")
    public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
        var count = argc
        var arguments = argv
        return runFuzzerDriver(&count, &arguments, fuzzOneInput)
    }
#else
    /// Without libFuzzer: runs the files named (or every file of the directories named) through a
    /// target, `relay-fuzz TARGET PATH...`, to replay a corpus or a crash.
    @main
    struct ReplayCorpus {
        static func main() {
            let arguments = CommandLine.arguments.dropFirst()
            guard let name = arguments.first, let target = FuzzTarget(rawValue: name) else {
                print("usage: relay-fuzz TARGET PATH... (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
                exit(2)
            }
            var failures = 0
            var count = 0
            for path in arguments.dropFirst() {
                var isDirectory: ObjCBool = false
                _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
                let files =
                    isDirectory.boolValue
                    ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).map { path + "/" + $0 } : [path]
                for file in files {
                    guard let bytes = FileManager.default.contents(atPath: file) else { continue }
                    count += 1
                    if let problem = Array(bytes).withUnsafeBufferPointer({ target.run($0) }) {
                        print("\(file): \(problem)")
                        failures += 1
                    }
                }
            }
            print("\(count) inputs, \(failures) failures")
            exit(failures == 0 ? 0 : 1)
        }
    }
#endif
