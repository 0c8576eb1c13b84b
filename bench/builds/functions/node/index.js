// Build benchmark function: uses each of its npm dependencies once.
const _ = require('lodash');
const dayjs = require('dayjs');
const { v4: uuidv4 } = require('uuid');
const ms = require('ms');
const chalk = require('chalk');

// The benchmark driver rewrites this line between the cold and the warm
// build, and checks that the warm package serves the new value.
const BUILD_MARK = 'original';

module.exports = async (context) =>
  context.res.json({
    sum: _.sum([1, 2, 3]),
    year: dayjs('2024-02-03').year(),
    uuidLength: uuidv4().length,
    ms: ms('2h'),
    chalk: typeof chalk.red,
    mark: BUILD_MARK,
  });
