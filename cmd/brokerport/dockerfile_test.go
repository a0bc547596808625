package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The Dockerfile cannot be built here (no engine), so this holds it against the code: every
// directory of the module that the binary imports is copied into the build stage.
func TestDockerfileCopiesEverythingTheBinaryImports(t *testing.T) {
	dockerfile, err := os.ReadFile("../../Dockerfile")
	require.NoError(t, err)
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	require.NoError(t, err)
	const module = "github.com/brokerport/brokerport/"
	for _, pkg := range strings.Fields(string(out)) {
		dir, ok := strings.CutPrefix(pkg, module)
		if !ok {
			continue
		}
		top, _, _ := strings.Cut(dir, "/")
		assert.Contains(t, string(dockerfile), "COPY "+top+"/ "+top+"/", "the image build needs %s (imported by the binary)", pkg)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "distroless/static", "USER 65532:65532", `ENTRYPOINT ["/brokerport"]`} {
		assert.Contains(t, string(dockerfile), want)
	}
}
