#include <cstdio>

int main() {
  std::fprintf(stderr, "squeeze: the command line is being built\n");
  return 1;
}
