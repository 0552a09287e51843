// Package examples holds runnable programs that show eda end to end; each
// sub-directory is a main package (go run ./examples/quickstart).
package examples
