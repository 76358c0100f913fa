// edgekit in an Android app build (Gradle Kotlin DSL). Paste this into app/build.gradle.kts, below
// the `android { }` block. (Not `apply(from = ...)`: script plugins get no type-safe `android`
// accessor, so the sourceSets block at the end would not compile there.)
//
// `edgekitConvert` runs `edgekit convert` (Keras model -> int8 .tflite) and `edgekitExport` writes the
// model into the assets plus EdgekitModel.kt. Both declare their inputs and outputs, so Gradle skips
// them when nothing changed; edgekit itself is deterministic and leaves unchanged files untouched.
// edgekit exits non-zero with a one-line message on failure (exit codes: docs/cli.md), which fails
// the build. Set EDGEKIT (environment) to the edgekit executable if it is not on PATH.

val edgekitExe: String = System.getenv("EDGEKIT") ?: "edgekit"
val edgekitModel = layout.projectDirectory.file("ml/model.keras")         // your Keras model
val edgekitData = layout.projectDirectory.file("ml/calibration.npz")      // calibration samples (x)
val edgekitArtifacts = layout.buildDirectory.dir("edgekit/artifacts")
val edgekitGenerated = layout.buildDirectory.dir("generated/edgekit")
val edgekitPackage = "com.example.edgekit"                                // package of EdgekitModel.kt

val edgekitConvert by tasks.registering(Exec::class) {
    group = "edgekit"
    description = "Convert the Keras model to an int8 .tflite with edgekit"
    inputs.file(edgekitModel)
    inputs.file(edgekitData)
    inputs.property("edgekitArgs", listOf("--quantize", "int8", "--seed", "0"))
    outputs.dir(edgekitArtifacts)
    commandLine(edgekitExe, "convert", edgekitModel.asFile.path, "--data", edgekitData.asFile.path,
                "--quantize", "int8", "--seed", "0", "-o", edgekitArtifacts.get().asFile.path, "--quiet")
}

val edgekitExport by tasks.registering(Exec::class) {
    group = "edgekit"
    description = "Write the model into assets/ and EdgekitModel.kt"
    dependsOn(edgekitConvert)
    inputs.file(edgekitArtifacts.map { it.file("model.tflite") })
    inputs.property("edgekitPackage", edgekitPackage)
    outputs.dir(edgekitGenerated)
    commandLine(edgekitExe, "export", edgekitArtifacts.get().file("model.tflite").asFile.path,
                "--format", "android", "--package", edgekitPackage,
                "-o", edgekitGenerated.get().asFile.path, "--json")
}

// Make the generated folders part of the app's sources; the build then depends on edgekitExport.
android.sourceSets.getByName("main") {
    assets.srcDir(edgekitGenerated.map { it.dir("assets") })
    java.srcDir(edgekitGenerated.map { it.dir("java") })
}
tasks.named("preBuild") { dependsOn(edgekitExport) }
