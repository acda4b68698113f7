import Foundation
import RelayFuzzTargets
import Testing

/// Every input kept in the repository for the fuzz targets (the seeds of Fuzz/corpus, and the
/// inputs of crashes fuzzing found, Fuzz/regressions) goes through its target on every test run:
/// what once broke stays fixed, without libFuzzer.
@Suite struct FuzzCorpusTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func inputs(_ target: FuzzTarget) -> [(name: String, bytes: [UInt8])] {
        ["Fuzz/corpus", "Fuzz/regressions"].flatMap { folder -> [(String, [UInt8])] in
            let directory = root.appendingPathComponent(folder).appendingPathComponent(target.rawValue)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            return names.sorted().compactMap { name in
                FileManager.default.contents(atPath: directory.appendingPathComponent(name).path).map { ("\(folder)/\(name)", Array($0)) }
            }
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func keptInputsHoldEveryInvariant(_ target: FuzzTarget) {
        let inputs = Self.inputs(target)
        #expect(!inputs.isEmpty, "no seeds for \(target.rawValue): run scripts/fuzz-seeds.py")
        for (name, bytes) in inputs {
            if let problem = bytes.withUnsafeBufferPointer({ target.run($0) }) { Issue.record("\(name): \(problem)") }
        }
    }
}
